package campaign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/retry"
)

// takeReady removes up to n items whose time has come; it returns them and
// the earliest time of those left.
func takeReady(q *[]*item, n int, now time.Time) ([]*item, time.Time) {
	var out []*item
	var next time.Time
	keep := (*q)[:0]
	for _, it := range *q {
		if len(out) < n && !it.notBefore.After(now) {
			out = append(out, it)
			continue
		}
		if next.IsZero() || it.notBefore.Before(next) {
			next = it.notBefore
		}
		keep = append(keep, it)
	}
	*q = keep
	return out, next
}

// dispatchGraph sends Graph work until none is left or ctx ends: read-backs
// first (they decide whether a write is needed), then writes in $batches of
// up to 20 within the pacer's slots, then notices.
func (x *run) dispatchGraph(ctx, parent context.Context, work *sync.WaitGroup) {
	sem := make(chan struct{}, x.r.Cfg.Concurrency)
	for x.graphOut.Load() > 0 && ctx.Err() == nil {
		now := x.r.now()
		x.mu.Lock()
		verify, nextV := takeReady(&x.verifyQ, graph.MaxBatch, now)
		var writes, notices []*item
		var nextW time.Time
		if len(verify) == 0 {
			ready, next := takeReady(&x.writeQ, graph.MaxBatch, now)
			nextW = next
			for _, it := range ready {
				if it.step == StepNotify {
					notices = append(notices, it)
				} else {
					writes = append(writes, it)
				}
			}
		}
		x.mu.Unlock()
		// The last read of the break-glass accounts decides, before a slot is taken.
		writes = slices.DeleteFunc(writes, func(it *item) bool { return x.excluded(parent, it) })

		switch {
		case len(notices) > 0:
			for _, it := range notices {
				x.sendNotice(parent, it)
			}
			for _, it := range writes {
				x.enqueue(it, false)
			}
			continue
		case len(verify) > 0:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				x.requeue(verify, true)
				return
			}
			work.Add(1)
			go func() { defer work.Done(); defer func() { <-sem }(); x.verifyBatch(parent, verify) }()
			continue
		case len(writes) > 0:
			n, err := x.r.Pacer.Acquire(ctx, len(writes))
			if err != nil {
				x.requeue(writes, false)
				return
			}
			x.requeue(writes[n:], false)
			writes = writes[:n]
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				x.r.Pacer.Done(n, 0)
				x.requeue(writes, false)
				return
			}
			work.Add(1)
			go func() { defer work.Done(); defer func() { <-sem }(); x.sendBatch(parent, writes) }()
			continue
		}
		// Nothing ready: wait for an answer, a retry time, or the end.
		wait := 200 * time.Millisecond
		for _, next := range []time.Time{nextV, nextW} {
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(now), time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
		case <-x.changed:
		case <-time.After(wait):
		}
	}
}

func (x *run) requeue(items []*item, verify bool) {
	for _, it := range items {
		x.enqueue(it, verify)
	}
}

// writeRequest is the Graph request for a step (for verify_must_change:
// its fallback write).
func (x *run) writeRequest(id string, it *item) (graph.BatchRequest, error) {
	cloudID := x.targets[it.idx].CloudID
	user := "/users/" + url.PathEscape(cloudID)
	revoke := graph.BatchRequest{ID: id, Method: http.MethodPost, URL: user + "/revokeSignInSessions", Body: map[string]any{}} // a POST item needs a body
	switch it.step {
	case StepCloudMustChange:
		return graph.BatchRequest{ID: id, Method: http.MethodPatch, URL: user, Body: map[string]any{
			"passwordProfile": map[string]any{
				"forceChangePasswordNextSignIn":        true,
				"forceChangePasswordNextSignInWithMfa": x.r.Cfg.WithMFA,
			}}}, nil
	case StepVerifyMustChange:
		switch it.fallback {
		case mustchange.WriteTemporaryPassword:
			// Never stored or logged: the user resets it (self-service or
			// helpdesk); what matters is that the old one no longer works.
			pw, err := mustchange.TemporaryPassword()
			if err != nil {
				return graph.BatchRequest{}, err
			}
			return graph.BatchRequest{ID: id, Method: http.MethodPatch, URL: user, Body: map[string]any{
				"passwordProfile": map[string]any{
					"password":                             pw,
					"forceChangePasswordNextSignIn":        true,
					"forceChangePasswordNextSignInWithMfa": x.c.Verify.WithMFA,
				}}}, nil
		case mustchange.WriteRevoke:
			return revoke, nil
		case mustchange.WritePendingGroup:
			return graph.BatchRequest{ID: id, Method: http.MethodPost, URL: "/groups/" + url.PathEscape(x.c.Verify.PendingGroupID) + "/members/$ref",
				Body: map[string]any{"@odata.id": strings.TrimRight(x.r.Cfg.GraphBaseURL, "/") + "/directoryObjects/" + url.PathEscape(cloudID)}}, nil
		}
		return graph.BatchRequest{}, fmt.Errorf("unknown fallback write %q", it.fallback)
	default: // StepRevoke
		return revoke, nil
	}
}

// fallbackWrites are the fallback's writes for a user: the strategy's,
// without the chain's revoke when the campaign revokes the user's sessions
// itself (a second revoke signs out again whoever signed in between).
func (x *run) fallbackWrites(idx int) (writes []mustchange.Write, revokedByCampaign bool) {
	campaignRevokes := slices.Contains(x.c.StepsFor(x.targets[idx]), StepRevoke)
	for _, w := range x.c.Verify.Writes() {
		if w == mustchange.WriteRevoke && campaignRevokes {
			revokedByCampaign = true
			continue
		}
		writes = append(writes, w)
	}
	return writes, revokedByCampaign
}

// checkFlag handles a verify_must_change's read-back: the flag is there
// (done), or missing after a 2xx (audited; the fallback's first write is
// queued, or the step fails when none is configured); for a fallback write
// sent without a recorded answer, whether it took.
func (x *run) checkFlag(ctx context.Context, it *item, u graph.User, status int) {
	now := x.r.now().UTC()
	if it.fallback != "" {
		if it.verify && x.fallbackTook(it, u) {
			x.addStat(func(s *Stats) { s.Verified++ })
			x.fallbackApplied(ctx, it, status, true)
			return
		}
		it.verify = false
		if it.attempts >= x.r.Cfg.MaxAttempts {
			x.record(ctx, it, StepResult{Status: StatusFailed, At: now, Detail: fmt.Sprintf("%s: fallback %s: no effect after %d attempts",
				mustchange.MissingDetail(x.c.Verify.Fallback), it.fallback, it.attempts)})
			return
		}
		x.enqueue(it, false) // not applied: write it (again)
		return
	}
	if mustchange.Took(u) {
		x.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status, Detail: "flag confirmed by read-back"})
		return
	}
	x.mu.Lock()
	mc := x.prog[it.idx].Steps[StepCloudMustChange]
	x.mu.Unlock()
	if mc != nil && !u.LastPasswordChange.IsZero() && !u.LastPasswordChange.Before(mc.At.Truncate(time.Second).Add(-time.Second)) {
		// The flag is gone because the user has already set a new password.
		x.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status,
			Detail: "no flag: password changed at " + u.LastPasswordChange.UTC().Format(time.RFC3339) + ", after the must_change"})
		return
	}
	missing := mustchange.MissingDetail(x.c.Verify.Fallback)
	x.audit(ctx, x.targets[it.idx], StepVerifyMustChange, StepResult{Status: StatusFailed, At: now, HTTP: status, Detail: missing})
	writes, revoked := x.fallbackWrites(it.idx)
	switch {
	case len(writes) > 0:
		x.addStat(func(s *Stats) { s.Fallbacks++ })
		it.fallback, it.attempts = writes[0], 0
		x.record(ctx, it, StepResult{Status: StatusFallback, At: now, HTTP: status, Detail: missing + ": " + string(writes[0]) + " due"})
		x.enqueue(it, false)
	case revoked:
		x.addStat(func(s *Stats) { s.Fallbacks++ })
		x.record(ctx, it, StepResult{Status: StatusDone, At: now, HTTP: status, Detail: missing + ": sessions revoked by the campaign's revoke step"})
	default:
		x.record(ctx, it, StepResult{Status: StatusFailed, At: now, HTTP: status,
			Detail: missing + ": no fallback write configured (actuator.cloud_managed.fallback, actuator.synced)"})
	}
}

// fallbackTook: a fallback write whose answer is unknown took effect. A
// group add cannot be told from a read of the user: verifyBatch asks
// checkMemberGroups first (checkPendingMembers); should an add be sent
// again anyway, Graph's "already exist" answer says it had.
func (x *run) fallbackTook(it *item, u graph.User) bool {
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
func (x *run) fallbackApplied(ctx context.Context, it *item, status int, verified bool) {
	it.fbDone = append(slices.Clone(it.fbDone), it.fallback)
	writes, revoked := x.fallbackWrites(it.idx)
	next := mustchange.Write("")
	if i := slices.Index(writes, it.fallback); i >= 0 && i+1 < len(writes) {
		next = writes[i+1]
	}
	applied := make([]string, len(it.fbDone))
	for i, w := range it.fbDone {
		applied[i] = string(w)
	}
	detail := mustchange.MissingDetail(x.c.Verify.Fallback) + ": " + strings.Join(applied, ", ") + " applied"
	it.fallback, it.attempts, it.verify = next, 0, false
	if next != "" {
		x.record(ctx, it, StepResult{Status: StatusFallback, At: x.r.now().UTC(), HTTP: status, Verified: verified, Detail: detail + "; " + string(next) + " due"})
		x.enqueue(it, false)
		return
	}
	switch {
	case slices.Contains(it.fbDone, mustchange.WriteTemporaryPassword):
		detail += " (the password is not recorded: the user sets a new one through self-service or the helpdesk)"
	case revoked:
		detail += "; sessions revoked by the campaign's revoke step"
	}
	x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), HTTP: status, Verified: verified, Detail: detail})
}

// sendBatch writes one $batch. Exactly once: the intent is stored before
// the request leaves; each item's answer is stored before the intent goes.
// An item whose answer is unknown (transport error, 5xx: Graph may or may
// not have applied it) becomes "uncertain" and is read back before any new
// write; a 429 is Graph's statement that it did nothing, so only that item
// is sent again, after Retry-After.
func (x *run) sendBatch(ctx context.Context, items []*item) {
	seq := x.nonce + "-" + strconv.FormatInt(x.seq.Add(1), 10)
	at := x.r.now().UTC()
	in := Intent{At: at}
	reqs := make([]graph.BatchRequest, 0, len(items))
	for j := 0; j < len(items); j++ {
		it := items[j]
		req, err := x.writeRequest(strconv.Itoa(len(reqs)), it)
		if err != nil { // not sent: cannot happen short of a broken random source
			x.r.Pacer.Done(1, 0)
			x.record(ctx, it, StepResult{Status: StatusFailed, At: at, Detail: err.Error()})
			items = slices.Delete(items, j, j+1)
			j--
			continue
		}
		it.attempts++
		it.sentAt = at
		in.Items = append(in.Items, IntentRef{Idx: it.idx, Step: it.step, Fallback: it.fallback})
		reqs = append(reqs, req)
	}
	if len(items) == 0 {
		return
	}
	if err := x.r.Store.PutIntent(ctx, x.c.ID, seq, in); err != nil {
		x.log.Warn().Err(err).Msg("recording batch intent failed; batch not sent")
		x.r.Pacer.Done(len(items), 0)
		for _, it := range items {
			it.attempts--
			it.notBefore = x.r.now().Add(time.Second)
		}
		x.requeue(items, false)
		return
	}
	resps, err := x.r.Batch.Batch(ctx, reqs)
	if err != nil {
		var ge *graph.Error
		if errors.As(err, &ge) && ge.Status == http.StatusTooManyRequests {
			// The whole batch was refused: nothing ran.
			x.r.Pacer.Throttled(ge.RetryAfter)
			x.r.Pacer.Done(len(items), 0)
			x.addStat(func(s *Stats) { s.Throttled++ })
			for _, it := range items {
				it.attempts--
				it.notBefore = x.r.now().Add(max(ge.RetryAfter, time.Second))
			}
			x.requeue(items, false)
		} else {
			x.r.Pacer.Done(len(items), len(items)) // may have counted: assume it did
			for _, it := range items {
				x.uncertain(ctx, it, StepResult{Status: StatusUncertain, At: at, HTTP: graph.StatusOf(err), Detail: err.Error()})
			}
		}
		x.dropIntent(ctx, seq)
		return
	}
	// The pacer hears first: a slot's window starts at the answer, and
	// recording below takes time that must not stretch it.
	counted, pct := 0, 0.0
	for _, resp := range resps {
		pct = max(pct, resp.ThrottlePercentage())
		switch {
		case resp.Status == http.StatusTooManyRequests:
			x.r.Pacer.Throttled(resp.RetryAfter)
		default:
			counted++ // applied, refused or unknown: it may have counted
		}
	}
	x.r.Pacer.Done(len(items), counted)
	x.r.Pacer.Usage(pct)
	for j, resp := range resps {
		it := items[j]
		switch {
		case resp.Status >= 200 && resp.Status < 300:
			x.addStat(func(s *Stats) { s.Writes++ })
			if it.step == StepVerifyMustChange {
				x.fallbackApplied(ctx, it, resp.Status, false)
				continue
			}
			x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), HTTP: resp.Status})
		case it.fallback == mustchange.WritePendingGroup && resp.Err != nil && graph.IsAlreadyMember(resp.Err):
			x.fallbackApplied(ctx, it, resp.Status, true) // an unanswered earlier add took
		case resp.Status == http.StatusTooManyRequests:
			x.addStat(func(s *Stats) { s.Throttled++ })
			it.attempts-- // throttling is pacing, not failure
			it.notBefore = x.r.now().Add(max(resp.RetryAfter, time.Second))
			x.enqueue(it, false)
		case resp.Status == 0 || resp.Status >= 500 || resp.Status == http.StatusRequestTimeout:
			detail := "no answer for this item"
			if resp.Err != nil {
				detail = resp.Err.Error()
			}
			x.uncertain(ctx, it, StepResult{Status: StatusUncertain, At: at, HTTP: resp.Status, Detail: detail})
		default:
			res := StepResult{Status: StatusFailed, At: x.r.now().UTC(), HTTP: resp.Status}
			if resp.Err != nil {
				res.Code, res.Detail = resp.Err.Code, resp.Err.Message
			}
			if it.step == StepVerifyMustChange {
				res.Detail = mustchange.MissingDetail(x.c.Verify.Fallback) + ": " + string(it.fallback) + " refused: " + res.Detail
			}
			x.record(ctx, it, res)
		}
	}
	x.dropIntent(ctx, seq)
}

func (x *run) dropIntent(ctx context.Context, seq string) {
	if err := x.r.Store.DeleteIntent(ctx, x.c.ID, seq); err != nil {
		// Harmless: the next load finds every item recorded and skips it.
		x.log.Warn().Err(err).Msg("removing batch intent")
	}
}

// uncertain records that a write's effect is unknown and queues a
// read-back; after MaxAttempts the step fails.
func (x *run) uncertain(ctx context.Context, it *item, res StepResult) {
	x.addStat(func(s *Stats) { s.Retries++ })
	x.record(ctx, it, res) // durable: a restart reads back too
	it.verify = true
	it.notBefore = x.r.now().Add(x.backoff(it.attempts))
	x.enqueue(it, true)
}

// verifyBatch reads users back to learn whether uncertain writes took:
// a must-change is there when the flag is set, a revoke when
// signInSessionsValidFromDateTime is not older than the write. What took is
// recorded as done (verified); the rest is written again (or fails after
// MaxAttempts).
func (x *run) verifyBatch(ctx context.Context, items []*item) {
	byUser := map[int]int{}
	var reqs []graph.BatchRequest
	for _, it := range items {
		if _, ok := byUser[it.idx]; ok {
			continue
		}
		byUser[it.idx] = len(reqs)
		reqs = append(reqs, graph.BatchRequest{ID: strconv.Itoa(len(reqs)), Method: http.MethodGet,
			URL: "/users/" + url.PathEscape(x.targets[it.idx].CloudID) + "?$select=id,passwordProfile,signInSessionsValidFromDateTime,lastPasswordChangeDateTime"})
	}
	resps, err := x.r.Batch.Batch(ctx, reqs)
	if err == nil {
		err = x.checkPendingMembers(ctx, items)
	}
	if err != nil {
		for _, it := range items {
			it.notBefore = x.r.now().Add(x.backoff(it.attempts))
		}
		x.requeue(items, true)
		return
	}
	for _, it := range items {
		if it.step == StepVerifyMustChange && it.fallback == mustchange.WritePendingGroup && it.verify {
			switch m := it.member; {
			case m == nil || m.Status != http.StatusOK:
				if m != nil && m.Status == http.StatusTooManyRequests {
					x.r.Pacer.Throttled(m.RetryAfter)
				}
				it.notBefore = x.r.now().Add(x.backoff(it.attempts))
				x.enqueue(it, true)
				continue
			case isMemberOf(m.Body, x.c.Verify.PendingGroupID):
				x.addStat(func(s *Stats) { s.Verified++ })
				x.fallbackApplied(ctx, it, m.Status, true) // the unanswered add took
				continue
			}
			// Not a member: the add did not take; checkFlag writes it again.
		}
		resp := resps[byUser[it.idx]]
		switch {
		case resp.Status == http.StatusNotFound:
			x.record(ctx, it, StepResult{Status: StatusFailed, At: x.r.now().UTC(), HTTP: resp.Status, Detail: "user not found on read-back"})
			continue
		case resp.Err != nil || resp.Status != http.StatusOK:
			ra := resp.RetryAfter
			if resp.Status == http.StatusTooManyRequests {
				x.r.Pacer.Throttled(ra)
			}
			it.notBefore = x.r.now().Add(max(ra, x.backoff(it.attempts)))
			x.enqueue(it, true)
			continue
		}
		var uj graph.UserJSON
		if err := json.Unmarshal(resp.Body, &uj); err != nil {
			it.notBefore = x.r.now().Add(x.backoff(it.attempts))
			x.enqueue(it, true)
			continue
		}
		u := uj.User()
		if it.step == StepVerifyMustChange {
			x.checkFlag(ctx, it, u, resp.Status)
			continue
		}
		took, detail := false, "the write took effect (read back after an unanswered request)"
		// Graph keeps whole seconds; allow a second of clock skew.
		since := it.sentAt.Truncate(time.Second).Add(-time.Second)
		switch it.step {
		case StepCloudMustChange:
			took = u.ForceChangeNextSignIn && (!x.r.Cfg.WithMFA || u.ForceChangeWithMFA)
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
			x.addStat(func(s *Stats) { s.Verified++ })
			x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), HTTP: resp.Status, Verified: true, Detail: detail})
			continue
		}
		it.verify = false
		if it.attempts >= x.r.Cfg.MaxAttempts {
			x.record(ctx, it, StepResult{Status: StatusFailed, At: x.r.now().UTC(), Detail: fmt.Sprintf("no effect after %d attempts", it.attempts)})
			continue
		}
		x.enqueue(it, false) // not applied: write it (again)
	}
}

// checkPendingMembers asks Graph, for each pending-group add whose answer
// was lost, whether the user is in the group (POST
// /users/{id}/checkMemberGroups, in one $batch): a read of the user cannot
// tell, and adding again would be a second add (answered "already exist").
// The answers are left on the items (item.member).
func (x *run) checkPendingMembers(ctx context.Context, items []*item) error {
	var reqs []graph.BatchRequest
	var asked []*item
	for _, it := range items {
		it.member = nil
		if it.step == StepVerifyMustChange && it.fallback == mustchange.WritePendingGroup && it.verify {
			reqs = append(reqs, graph.BatchRequest{ID: strconv.Itoa(len(reqs)), Method: http.MethodPost,
				URL:  "/users/" + url.PathEscape(x.targets[it.idx].CloudID) + "/checkMemberGroups",
				Body: map[string]any{"groupIds": []string{x.c.Verify.PendingGroupID}}})
			asked = append(asked, it)
		}
	}
	if len(reqs) == 0 {
		return nil
	}
	resps, err := x.r.Batch.Batch(ctx, reqs)
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

// sendNotice publishes the password_reset notice; the message ID makes a
// republish after a restart a duplicate JetStream drops, and the
// notifier's ledger (keyed by the campaign's start) sends it once.
func (x *run) sendNotice(ctx context.Context, it *item) {
	if x.excluded(ctx, it) {
		return
	}
	t := x.targets[it.idx]
	a := events.Action{
		ID:        events.KeySafe(fmt.Sprintf("campaign.%s.%d.notify", x.c.ID, t.Idx)),
		Kind:      events.ActionNotify,
		Rule:      "campaign",
		Reason:    x.c.Spec.Name,
		EventID:   "campaign." + x.c.ID,
		EventTime: x.r.now().UTC(),
		User:      events.UserRef{UPN: t.UPN, CloudID: t.CloudID, ObjectGUID: t.ObjectGUID, DN: t.DN},
		Notice: &events.Notice{Template: events.NoticePasswordReset, PasswordSetAt: x.c.StartedAt,
			Language: t.Lang, DisplayName: t.Name},
		Campaign: x.c.ID,
	}
	it.attempts++
	if _, err := x.r.Pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
		if it.attempts >= x.r.Cfg.MaxAttempts {
			x.record(ctx, it, StepResult{Status: StatusFailed, At: x.r.now().UTC(), Detail: err.Error()})
			return
		}
		it.notBefore = x.r.now().Add(x.backoff(it.attempts))
		x.enqueue(it, false)
		return
	}
	x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), Detail: "published " + a.ID})
}

// adWorker writes pwdLastSet=0 for synced users until none is left or ctx
// ends. Before a write it records "uncertain"; after a stop, such a user's
// pwdLastSet is read first: 0 means the write (or someone's) took.
func (x *run) adWorker(ctx, parent context.Context) {
	for {
		var it *item
		select {
		case <-ctx.Done():
			return
		case <-x.adDone:
			return
		case it = <-x.adCh:
		}
		if wait := time.Until(later(it.notBefore, x.adDownUntil())); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		x.adStep(parent, it)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// adDownUntil is when the AD lane may try the DC again after an outage.
func (x *run) adDownUntil() time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.adDown.until
}

// adUnreachable: the DC could not be reached, so the request was never sent
// and is not counted as an attempt. Every AD worker waits (backing off to
// RetryMax) before the next request: an outage neither fails users nor
// turns into a dial storm, and the campaign finishes once the DC is back.
// Past RunConfig.ADOutageAlert it alerts the admins, once per outage.
func (x *run) adUnreachable(ctx context.Context, err error) {
	now := x.r.now()
	x.mu.Lock()
	x.adDown.fails++
	x.adDown.until = now.Add(x.backoff(x.adDown.fails))
	first := x.stats.ADUnreachable.IsZero()
	if first {
		x.stats.ADUnreachable = now.UTC()
	}
	since := x.stats.ADUnreachable
	alert := !x.adDown.alerted && now.Sub(since) >= x.r.Cfg.ADOutageAlert
	x.adDown.alerted = x.adDown.alerted || alert
	x.mu.Unlock()
	if first {
		metrics.CampaignADUnreachable.WithLabelValues(x.c.ID).Set(1)
		x.log.Warn().Err(err).Msg("the DC is unreachable: AD writes wait for it")
	}
	if alert {
		x.alert(ctx, fmt.Sprintf("ad_unreachable.%d", since.Unix()), fmt.Sprintf("campaign %q: the DC of %s has been unreachable since %s; "+
			"its AD writes wait for it (%s)", x.c.Spec.Name, x.c.Spec.Domain, since.Format(time.RFC3339), err))
	}
}

// adReachable ends an outage: the DC answered. An outage the admins were
// alerted about is followed by the all-clear.
func (x *run) adReachable(ctx context.Context) {
	x.mu.Lock()
	since, alerted := x.stats.ADUnreachable, x.adDown.alerted
	x.adDown.fails, x.adDown.until, x.adDown.alerted, x.stats.ADUnreachable = 0, time.Time{}, false, time.Time{}
	x.mu.Unlock()
	if since.IsZero() {
		return
	}
	metrics.CampaignADUnreachable.WithLabelValues(x.c.ID).Set(0)
	took := x.r.now().Sub(since)
	x.log.Info().Dur("unreachable_for", took).Msg("the DC answers again: AD writes go on")
	if alerted {
		x.alert(ctx, fmt.Sprintf("ad_reachable.%d", since.Unix()), fmt.Sprintf("campaign %q: the DC of %s answers again after %s unreachable; "+
			"its AD writes go on", x.c.Spec.Name, x.c.Spec.Domain, took.Round(time.Second)))
	}
}

// requeueAD puts it back in the AD lane, from a goroutine that ends with
// the run, as a retry does.
func (x *run) requeueAD(ctx context.Context, it *item) {
	go func() {
		select {
		case x.adCh <- it:
		case <-x.adDone:
		case <-x.stopped:
		case <-ctx.Done():
		}
	}()
}

func (x *run) adStep(ctx context.Context, it *item) {
	dn := x.targets[it.idx].DN
	retry := func() {
		it.notBefore = x.r.now().Add(x.backoff(it.attempts))
		x.requeueAD(ctx, it)
	}
	if it.verify {
		v, err := x.r.adRead(ctx, x.ad, dn)
		if errors.Is(err, ErrUnreachable) {
			x.adUnreachable(ctx, err)
			x.requeueAD(ctx, it)
			return
		}
		x.adReachable(ctx)
		if err != nil {
			it.attempts++
			if it.attempts >= x.r.Cfg.MaxAttempts {
				x.record(ctx, it, StepResult{Status: StatusFailed, At: x.r.now().UTC(), LDAP: err.Error()})
				return
			}
			retry()
			return
		}
		switch {
		case v == 0:
			x.addStat(func(s *Stats) { s.Verified++ })
			x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), LDAP: "pwdLastSet=0 (read back)", Verified: true})
			return
		case v > 0 && !it.sentAt.IsZero() && !events.FileTime(v).Before(it.sentAt.Add(-time.Second)):
			// A password set since the write was sent (a second of clock
			// skew allowed): the write took and the user has changed the
			// password since, or changed it anyway. Writing again would
			// force a second change.
			x.addStat(func(s *Stats) { s.Verified++ })
			x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), Verified: true,
				LDAP:   "pwdLastSet=" + events.FileTime(v).UTC().Format(time.RFC3339Nano) + " (read back)",
				Detail: "password changed after the unanswered write: counted as done"})
			return
		}
		it.verify = false
	}
	if x.excluded(ctx, it) {
		return
	}
	// The cloud follow-up of this write is campaign work for the actuator;
	// this waits while too many follow-ups are outstanding there.
	if err := x.r.Pacer.MarkOwn(ctx, x.targets[it.idx].ObjectGUID); err != nil {
		x.requeueAD(ctx, it)
		return
	}
	it.attempts++
	at := x.r.now().UTC()
	x.record(ctx, it, StepResult{Status: StatusUncertain, At: at, Detail: "LDAP modify sent"})
	ans, err := x.ad.ForceChange(ctx, dn)
	if errors.Is(err, ErrUnreachable) {
		// Not sent. The "modify sent" record stays: it only makes a
		// restart read back first, which is harmless.
		it.attempts--
		x.adUnreachable(ctx, err)
		x.requeueAD(ctx, it)
		return
	}
	it.sentAt = at
	x.adReachable(ctx)
	switch {
	case err == nil:
		x.addStat(func(s *Stats) { s.LDAP++ })
		x.record(ctx, it, StepResult{Status: StatusDone, At: x.r.now().UTC(), LDAP: ans})
	case errors.Is(err, ErrDefinite) || it.attempts >= x.r.Cfg.MaxAttempts:
		x.record(ctx, it, StepResult{Status: StatusFailed, At: x.r.now().UTC(), LDAP: err.Error()})
	default:
		x.addStat(func(s *Stats) { s.Retries++ })
		x.record(ctx, it, StepResult{Status: StatusUncertain, At: at, LDAP: err.Error()})
		it.verify = true
		retry()
	}
}

func (r *Runner) adRead(ctx context.Context, ad ADWriter, dn string) (int64, error) {
	return ad.PwdLastSet(ctx, dn)
}

// batchReads sends GETs in one $batch, resending throttled and failed items
// a few times (reads are safe to repeat): 200 ms apart, doubling, at least
// Graph's Retry-After, six tries in all; after those the items' answers
// stand as they are.
func batchReads(ctx context.Context, b graph.Batcher, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	out := make([]graph.BatchResponse, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	var wait time.Duration // the longest Retry-After of the last try
	err := retry.Until(ctx, readBackoff(), func(ctx context.Context) error {
		sub := make([]graph.BatchRequest, len(todo))
		for j, i := range todo {
			sub[j] = reqs[i]
		}
		resps, err := b.Batch(ctx, sub)
		if err != nil {
			var ge *graph.Error
			if !errors.As(err, &ge) || !ge.Retryable() {
				return retry.Permanent(err)
			}
			wait = ge.RetryAfter
			return err
		}
		var again []int
		wait = 0
		for j, resp := range resps {
			out[todo[j]] = resp
			if resp.Err != nil && resp.Err.Retryable() {
				again = append(again, todo[j])
				wait = max(wait, resp.RetryAfter)
			}
		}
		if len(again) > 0 {
			todo = again
			return errItemsLeft
		}
		return nil
	}, retry.AtLeast(func(error) time.Duration { return wait }))
	var gaveUp *retry.GaveUpError
	if errors.As(err, &gaveUp) {
		err = gaveUp.Err
	}
	if err != nil && !errors.Is(err, errItemsLeft) {
		return nil, err
	}
	return out, nil
}

// errItemsLeft: some items of a $batch of reads are to be sent again.
var errItemsLeft = errors.New("$batch items to resend")

// readBackoff paces batchReads: 200 ms, doubling, no jitter, 5 retries.
func readBackoff() backoff.BackOff {
	return backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0), backoff.WithMaxInterval(time.Minute), backoff.WithMaxElapsedTime(0)), 5)
}
