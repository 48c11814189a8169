package graphsim

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// windowLimit is a sliding-window rate limit: an operation is allowed when
// fewer than limit were accepted in the last window. Refused ones do not
// count, so a client that honours Retry-After gets the full budget. It
// models Graph's identity write quota (3,000 writes per 150 s per
// app+tenant) and the mailbox and Teams notification limits.
type windowLimit struct {
	mu     sync.Mutex
	limit  int // 0: unlimited
	window time.Duration
	used   map[string][]time.Time // accepted write times per scope, oldest first
}

func newWindowLimit(limit int, window time.Duration) *windowLimit {
	return &windowLimit{limit: limit, window: window, used: map[string][]time.Time{}}
}

func (b *windowLimit) set(limit int, window time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit, b.window = limit, window
}

// take tries to spend one operation for scope at now. It returns whether
// it is allowed, how long until one is (when not), and the window's use as
// a fraction of the limit after it (0 when unlimited).
func (b *windowLimit) take(scope string, now time.Time) (ok bool, retryAfter time.Duration, usage float64) {
	return b.takeN(scope, now, 1, true)
}

// takeN tries to spend n operations at once (a message's recipients);
// spend false only checks. An n above the limit never fits.
func (b *windowLimit) takeN(scope string, now time.Time, n int, spend bool) (ok bool, retryAfter time.Duration, usage float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit <= 0 {
		return true, 0, 0
	}
	times := b.used[scope]
	cutoff := now.Add(-b.window)
	drop := 0
	for drop < len(times) && !times[drop].After(cutoff) {
		drop++
	}
	times = times[drop:]
	b.used[scope] = times
	if len(times)+n > b.limit {
		if n > b.limit {
			return false, b.window, float64(len(times)) / float64(b.limit)
		}
		// The oldest write that must leave the window before n more fit.
		oldest := times[len(times)+n-1-b.limit]
		return false, oldest.Add(b.window).Sub(now), float64(len(times)) / float64(b.limit)
	}
	if spend {
		for range n {
			times = append(times, now)
		}
		b.used[scope] = times
	}
	return true, 0, float64(len(times)) / float64(b.limit)
}

// throttledReply is Graph's 429 for an exceeded write quota.
func throttledReply(retryAfter time.Duration, appID, tenantID string) reply {
	return throttledReplyScope(retryAfter, "Tenant_Application/Write", "WriteLimitExceeded", appID, tenantID)
}

// throttledReplyScope is Graph's 429 for an exceeded quota: scope is
// x-ms-throttle-scope's "<Scope>/<Limit>", info x-ms-throttle-information.
func throttledReplyScope(retryAfter time.Duration, scope, info, appID, tenantID string) reply {
	r := errorReply(http.StatusTooManyRequests, codeTooManyRequests, "Too many requests. Please retry after the number of seconds in the Retry-After header.")
	r.setHeader("Retry-After", retryAfterValue(retryAfter))
	r.setHeader("x-ms-throttle-scope", fmt.Sprintf("%s/%s/%s", scope, appID, tenantID))
	r.setHeader("x-ms-throttle-information", info)
	return r
}

// Identity resource-unit quotas per app+tenant and 10 s, by tenant size
// (Microsoft Graph service-specific throttling limits, identity and access).
const (
	ruSmallTenant  = 3500 // fewer than 50 users
	ruMediumTenant = 5000 // 50 to 500 users
	ruLargeTenant  = 8000 // more than 500 users
)

// resourceUnitLimit is the resource-unit quota in force: the configured
// one, or Graph's for the tenant's size (0: unlimited).
func (s *Server) resourceUnitLimit() int {
	if n := s.opts.ResourceUnitBudget; n != 0 {
		return max(n, 0)
	}
	s.mu.Lock()
	users := len(s.store.users)
	s.mu.Unlock()
	switch {
	case users < 50:
		return ruSmallTenant
	case users <= 500:
		return ruMediumTenant
	}
	return ruLargeTenant
}

// UseTenantWrites spends n writes of the tenant-wide write quota, as other
// apps of the tenant do: pwsync's writes are then throttled before its own
// per-app quota is used up. It returns how many fitted.
func (s *Server) UseTenantWrites(n int) int {
	now := time.Now()
	for i := range n {
		if ok, _, _ := s.tenantWrites.take(s.opts.TenantID, now); !ok {
			return i
		}
	}
	return n
}

// retryAfterValue is whole seconds, rounded up and at least 1: clients
// (kiota's retry handler among them) parse it as a number of seconds, and
// rounding down would have them retry too early.
func retryAfterValue(d time.Duration) string {
	secs := int(math.Ceil(d.Seconds()))
	return strconv.Itoa(max(secs, 1))
}

// usagePercent formats x-ms-throttle-limit-percentage; Graph sends it only
// above 0.8 of the limit.
func usagePercent(usage float64) (string, bool) {
	if usage <= 0.8 {
		return "", false
	}
	return strconv.FormatFloat(usage, 'f', 2, 64), true
}

// TimeScaled returns o with Graph's identity quotas' windows scaled
// together so that the per-app write window is writeWindow (Graph's
// 150 s): the tenant's write window and the resource-unit window keep
// their proportion to it. Tests that run the write quota faster use it so
// that the other quotas do not become relatively stricter. Budgets are
// left as they are.
func (o Options) TimeScaled(writeWindow time.Duration) Options {
	scale := func(d time.Duration) time.Duration {
		return time.Duration(float64(d) * float64(writeWindow) / float64(DefaultWriteWindow))
	}
	o.WriteWindow = writeWindow
	o.TenantWriteWindow = scale(DefaultTenantWriteWindow)
	o.ResourceUnitWindow = scale(DefaultResourceUnitWindow)
	return o
}
