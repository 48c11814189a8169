package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/mustchange"
)

// verifyBatch reads users back to learn whether uncertain writes took:
// a must-change is there when the flag is set, a revoke when
// signInSessionsValidFromDateTime is not older than the write. What took is
// recorded as done (verified); the rest is written again (or fails after
// MaxAttempts).
func (g *graphLane) verifyBatch(ctx context.Context, items []*item) {
	byUser := map[int]int{}
	var reqs []graph.BatchRequest
	for _, it := range items {
		if _, ok := byUser[it.idx]; ok {
			continue
		}
		byUser[it.idx] = len(reqs)
		reqs = append(reqs, graph.BatchRequest{ID: strconv.Itoa(len(reqs)), Method: http.MethodGet,
			URL: "/users/" + url.PathEscape(g.targets[it.idx].CloudID) + "?$select=id,passwordProfile,signInSessionsValidFromDateTime,lastPasswordChangeDateTime"})
	}
	resps, err := g.batch.Batch(ctx, reqs)
	if err == nil {
		err = g.checkPendingMembers(ctx, items)
	}
	if err != nil {
		for _, it := range items {
			it.notBefore = g.now().Add(g.cfg.backoff(it.attempts))
		}
		g.requeue(items, true)
		return
	}
	for _, it := range items {
		if it.step == StepVerifyMustChange && it.fallback == mustchange.WritePendingGroup && it.verify {
			switch m := it.member; {
			case m == nil || m.Status != http.StatusOK:
				if m != nil && m.Status == http.StatusTooManyRequests {
					g.pace.Throttled(m.RetryAfter)
				}
				it.notBefore = g.now().Add(g.cfg.backoff(it.attempts))
				g.enqueue(it, true)
				continue
			case isMemberOf(m.Body, g.c.Verify.PendingGroupID):
				g.ledger.count(func(s *Stats) { s.Verified++ })
				g.fallbackApplied(ctx, it, m.Status, true) // the unanswered add took
				continue
			}
			// Not a member: the add did not take; checkFlag writes it again.
		}
		resp := resps[byUser[it.idx]]
		switch {
		case resp.Status == http.StatusNotFound:
			g.record(ctx, it, StepResult{Status: StatusFailed, At: g.now().UTC(), HTTP: resp.Status, Detail: "user not found on read-back"})
			continue
		case resp.Err != nil || resp.Status != http.StatusOK:
			ra := resp.RetryAfter
			if resp.Status == http.StatusTooManyRequests {
				g.pace.Throttled(ra)
			}
			it.notBefore = g.now().Add(max(ra, g.cfg.backoff(it.attempts)))
			g.enqueue(it, true)
			continue
		}
		var uj graph.UserJSON
		if err := json.Unmarshal(resp.Body, &uj); err != nil {
			it.notBefore = g.now().Add(g.cfg.backoff(it.attempts))
			g.enqueue(it, true)
			continue
		}
		u := uj.User()
		if it.step == StepVerifyMustChange {
			g.checkFlag(ctx, it, u, resp.Status)
			continue
		}
		took, detail := false, "the write took effect (read back after an unanswered request)"
		// Graph keeps whole seconds; allow a second of clock skew.
		since := it.sentAt.Truncate(time.Second).Add(-time.Second)
		switch it.step {
		case StepCloudMustChange:
			took = u.ForceChangeNextSignIn && (!g.cfg.WithMFA || u.ForceChangeWithMFA)
			if !took && !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since) {
				// No flag, but a password set since the write was sent: the
				// write took and the user has changed the password already
				// (or changed it anyway): writing again would force a second
				// change.
				took, detail = true, "password changed at "+u.LastPasswordChange.UTC().Format(time.RFC3339)+
					", after the unanswered write: counted as done"
			}
		case StepRevoke:
			took = !u.SessionsValidFrom.IsZero() && !u.SessionsValidFrom.Before(since)
		}
		if took {
			g.ledger.count(func(s *Stats) { s.Verified++ })
			g.record(ctx, it, StepResult{Status: StatusDone, At: g.now().UTC(), HTTP: resp.Status, Verified: true, Detail: detail})
			continue
		}
		it.verify = false
		if it.attempts >= g.cfg.MaxAttempts {
			g.record(ctx, it, StepResult{Status: StatusFailed, At: g.now().UTC(), Detail: fmt.Sprintf("no effect after %d attempts", it.attempts)})
			continue
		}
		g.enqueue(it, false) // not applied: write it (again)
	}
}

// checkPendingMembers asks Graph, for each pending-group add whose answer
// was lost, whether the user is in the group (POST
// /users/{id}/checkMemberGroups, in one $batch): a read of the user cannot
// tell, and adding again would be a second add (answered "already exist").
// The answers are left on the items (item.member).
func (g *graphLane) checkPendingMembers(ctx context.Context, items []*item) error {
	var reqs []graph.BatchRequest
	var asked []*item
	for _, it := range items {
		it.member = nil
		if it.step == StepVerifyMustChange && it.fallback == mustchange.WritePendingGroup && it.verify {
			reqs = append(reqs, graph.BatchRequest{ID: strconv.Itoa(len(reqs)), Method: http.MethodPost,
				URL:  "/users/" + url.PathEscape(g.targets[it.idx].CloudID) + "/checkMemberGroups",
				Body: map[string]any{"groupIds": []string{g.c.Verify.PendingGroupID}}})
			asked = append(asked, it)
		}
	}
	if len(reqs) == 0 {
		return nil
	}
	resps, err := g.batch.Batch(ctx, reqs)
	if err != nil {
		return err
	}
	for i, it := range asked {
		it.member = &resps[i]
	}
	return nil
}

// isMemberOf reads a checkMemberGroups answer ({"value": [group ids]}).
func isMemberOf(body []byte, groupID string) bool {
	var v struct {
		Value []string `json:"value"`
	}
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	return slices.ContainsFunc(v.Value, func(id string) bool { return strings.EqualFold(id, groupID) })
}

// checkFlag handles a verify_must_change's read-back: the flag is there
// (done), or missing after a 2xx (audited; the fallback's first write is
// queued, or the step fails when none is configured); for a fallback write
// sent without a recorded answer, whether it took.
func (g *graphLane) checkFlag(ctx context.Context, it *item, u graph.User, status int) {
	now := g.now().UTC()
	if it.fallback != "" {
		if it.verify && g.fallbackTook(it, u) {
			g.ledger.count(func(s *Stats) { s.Verified++ })
			g.fallbackApplied(ctx, it, status, true)
			return
		}
		it.verify = false
		if it.attempts >= g.cfg.MaxAttempts {
			g.record(ctx, it, StepResult{Status: StatusFailed, At: now, Detail: fmt.Sprintf("%s: fallback %s: no effect after %d attempts",
				mustchange.MissingDetail(g.c.Verify.Fallback), it.fallback, it.attempts)})
			return
		}
		g.enqueue(it, false) // not applied: write it (again)
		return
	}
	if mustchange.Took(u) {
		g.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status, Detail: "flag confirmed by read-back"})
		return
	}
	mc := g.ledger.result(it.idx, StepCloudMustChange)
	if mc != nil && !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(mc.At.Truncate(time.Second).Add(-time.Second)) {
		// The flag is gone because the user has already set a new password.
		g.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status,
			Detail: "no flag: password changed at " + u.LastPasswordChange.UTC().Format(time.RFC3339) + ", after the must_change"})
		return
	}
	missing := mustchange.MissingDetail(g.c.Verify.Fallback)
	g.ledger.audit(ctx, it.idx, StepVerifyMustChange, StepResult{Status: StatusFailed, At: now, HTTP: status, Detail: missing})
	writes, revoked := g.fallbackWrites(it.idx)
	switch {
	case len(writes) > 0:
		g.ledger.count(func(s *Stats) { s.Fallbacks++ })
		it.fallback, it.attempts = writes[0], 0
		g.record(ctx, it, StepResult{Status: StatusFallback, At: now, HTTP: status, Detail: missing + ": " + string(writes[0]) + " due"})
		g.enqueue(it, false)
	case revoked:
		g.ledger.count(func(s *Stats) { s.Fallbacks++ })
		g.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status, Detail: missing + ": sessions revoked by the campaign's revoke step"})
	default:
		g.record(ctx, it, StepResult{Status: StatusFailed, At: now, HTTP: status,
			Detail: missing + ": no fallback write configured (actuator.cloud_managed.fallback, actuator.synced)"})
	}
}

// fallbackTook: a fallback write whose answer is unknown took effect. A
// group add cannot be told from a read of the user: verifyBatch asks
// checkMemberGroups first (checkPendingMembers); should an add be sent
// again anyway, Graph's "already exist" answer says it had.
func (g *graphLane) fallbackTook(it *item, u graph.User) bool {
	since := it.sentAt.Truncate(time.Second).Add(-time.Second) // Graph keeps whole seconds
	switch it.fallback {
	case mustchange.WriteTemporaryPassword:
		return mustchange.Took(u) || !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(since)
	case mustchange.WriteRevoke:
		return !u.SessionsValidFrom.IsZero() && !u.SessionsValidFrom.Before(since)
	}
	return false
}

// fallbackApplied records a fallback write that took and queues the next
// one, or ends the step.
func (g *graphLane) fallbackApplied(ctx context.Context, it *item, status int, verified bool) {
	it.fbDone = append(slices.Clone(it.fbDone), it.fallback)
	writes, revoked := g.fallbackWrites(it.idx)
	next := mustchange.Write("")
	if i := slices.Index(writes, it.fallback); i >= 0 && i+1 < len(writes) {
		next = writes[i+1]
	}
	applied := make([]string, len(it.fbDone))
	for i, w := range it.fbDone {
		applied[i] = string(w)
	}
	detail := mustchange.MissingDetail(g.c.Verify.Fallback) + ": " + strings.Join(applied, ", ") + " applied"
	it.fallback, it.attempts, it.verify = next, 0, false
	if next != "" {
		g.record(ctx, it, StepResult{Status: StatusFallback, At: g.now().UTC(), HTTP: status, Verified: verified, Detail: detail + "; " + string(next) + " due"})
		g.enqueue(it, false)
		return
	}
	switch {
	case slices.Contains(it.fbDone, mustchange.WriteTemporaryPassword):
		detail += " (the password is not recorded: the user sets a new one through self-service or the helpdesk)"
	case revoked:
		detail += "; sessions revoked by the campaign's revoke step"
	}
	g.record(ctx, it, StepResult{Status: StatusDone, At: g.now().UTC(), HTTP: status, Verified: verified, Detail: detail})
}

// fallbackWrites are the fallback's writes for a user: the strategy's,
// without the chain's revoke when the campaign revokes the user's sessions
// itself (a second revoke signs out again whoever signed in between).
func (g *graphLane) fallbackWrites(idx int) (writes []mustchange.Write, revokedByCampaign bool) {
	campaignRevokes := slices.Contains(g.c.StepsFor(g.targets[idx]), StepRevoke)
	for _, w := range g.c.Verify.Writes() {
		if w == mustchange.WriteRevoke && campaignRevokes {
			revokedByCampaign = true
			continue
		}
		writes = append(writes, w)
	}
	return writes, revokedByCampaign
}
