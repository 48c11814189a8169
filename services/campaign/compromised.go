package campaign

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// RiskMarker marks users compromised in Entra ID Protection and reads the
// risky users back (graph.RiskReader; *msgraph.Client implements both).
type RiskMarker interface {
	ConfirmCompromised(ctx context.Context, userIDs []string) error
	RiskyUsersSince(ctx context.Context, since time.Time) ([]events.RiskyUser, error)
}

// riskStateConfirmed is Graph's riskState of a user an admin (or this
// campaign) confirmed compromised.
const riskStateConfirmed = "confirmedCompromised"

// unlicensedDetail is what a 403 on an Identity Protection call means: Graph
// answers the same status for both causes; its message tells them apart.
const unlicensedDetail = "Graph refused confirmCompromised (403): the tenant has no Entra ID P2 licence, " +
	"or the app lacks the application permission IdentityRiskyUser.ReadWrite.All; the password work is not affected"

// markFailedDetail is a refused mark's record: the explanation for a 403,
// Graph's own message otherwise.
func markFailedDetail(err error) string {
	if graph.IsUnlicensed(err) {
		return unlicensedDetail + ": " + graphMessage(err)
	}
	return "confirmCompromised refused: " + graphMessage(err)
}

// graphMessage is Graph's message of err, or err itself.
func graphMessage(err error) string {
	var ge *graph.Error
	if errors.As(err, &ge) && ge.Message != "" {
		return ge.Message
	}
	return err.Error()
}

// judged are the steps a user's outcome (done, failed, excluded) is judged
// by: the password work. The compromised mark is reported apart (its own
// record, Stats.ConfirmFailed, an alert of its own): a tenant without
// Entra ID P2 must not turn every reset into a failure. A user whose only
// step is the mark (a synced user in a campaign without require_change) is
// judged by it.
func judged(steps []Step) []Step {
	out := slices.DeleteFunc(slices.Clone(steps), func(s Step) bool { return s == StepConfirmCompromised })
	if len(out) == 0 {
		return steps
	}
	return out
}

// countMark counts a compromised mark that ended (the ledger's lock held).
func (s *Stats) countMark(res *StepResult) {
	switch {
	case res == nil:
	case res.Status == StatusDone:
		s.Confirmed++
	case res.Status == StatusFailed:
		s.ConfirmFailed++
	}
}

// fillCloudIDs finds the cloud accounts of synced targets selected in AD
// (an AD selector knows no cloud ID), so that they can be marked
// compromised too: the cloud user of the same UPN, read 20 per $batch,
// counts only when its onPremisesImmutableId is the target's objectGUID (the
// same account, not a namesake). A target without one gets no mark; the
// preview counts them.
func (r *Resolver) fillCloudIDs(ctx context.Context, targets []Target) error {
	var upns []string
	for _, t := range targets {
		if t.Kind == KindSynced && t.CloudID == "" {
			upns = append(upns, t.UPN)
		}
	}
	if len(upns) == 0 {
		return nil
	}
	found, _, err := r.usersByUPN(ctx, upns)
	if err != nil {
		return fmt.Errorf("finding the cloud accounts of %d synced users: %w", len(upns), err)
	}
	byUPN := make(map[string]graph.User, len(found))
	for _, u := range found {
		byUPN[strings.ToLower(u.UPN)] = u
	}
	for i, t := range targets {
		u, ok := byUPN[t.UPN]
		if t.Kind == KindSynced && t.CloudID == "" && ok && u.ImmutableID != "" &&
			events.GUIDFromImmutableID(u.ImmutableID) == t.ObjectGUID {
			targets[i].CloudID = u.ID
		}
	}
	return nil
}
