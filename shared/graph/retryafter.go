package graph

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps what a Retry-After may ask for: Graph asks for seconds
// or minutes; anything longer is a broken or hostile answer, and a wait
// that long would park the action for good.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads Retry-After: seconds (Graph sends integers, and has
// sent fractions like "2.128") or an HTTP date. Unparseable, not finite or
// past means 0; longer than MaxRetryAfter means MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		switch {
		case math.IsNaN(secs) || secs <= 0:
			return 0
		case secs >= MaxRetryAfter.Seconds(): // also +Inf; and no float->int overflow below
			return MaxRetryAfter
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, MaxRetryAfter)
		}
	}
	return 0
}
