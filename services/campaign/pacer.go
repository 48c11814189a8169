package campaign

import (
	"time"

	"github.com/pwsync/pwsync/services/actuator/budget"
)

// Pacer is the campaign's lane of the process's one directory write budget
// (services/actuator/budget): campaign writes take what live resets and
// expiry enforcement leave, a 429 pauses them until Retry-After, and Graph's
// x-ms-throttle-limit-percentage above our own use holds slots. `pwsync run`
// hands the runner the actuator's scheduler; a $batch of n items takes n slots.
type Pacer = budget.Lane

// NewPacer is a campaign lane on a scheduler of its own, for a runner alone
// on the budget (tests, benchmarks): limit writes per window, at most share
// of it. A limit <= 0 paces nothing (429s alone hold writes back).
func NewPacer(limit int, window time.Duration, share float64) *Pacer {
	return budget.New(budget.Config{Limit: limit, Window: window, CampaignShare: share}).Lane(budget.Campaign)
}
