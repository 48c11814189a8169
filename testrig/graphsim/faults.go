package graphsim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Fault makes the next Count matching requests fail. A request matches when
// Method is empty or equal (case-insensitive), its path starts with
// PathPrefix and ends with PathSuffix (when set: "/revokeSignInSessions"
// picks the revoke of any user, not the checkMemberGroups beside it).
// Paths are full server paths ("/v1.0/users/..."; batch items
// "/v1.0" + item url), so an empty PathPrefix matches every Graph request
// (the outer $batch POST included) and a PathPrefix such as
// "/{tenant}/oauth2" reaches the token endpoint, which an empty prefix never
// does.
//
// What happens: after Hang (if > 0; ended early when the client goes away or
// the server closes), Reset closes the connection without an answer (a
// $batch item gets a 503 item instead, since one connection carries the
// whole batch); otherwise a Status > 0 is answered, with Body (default: a
// Graph error envelope) and Retry-After when RetryAfter > 0. A fault with
// neither Reset nor Status only delays the request (a slow answer); if the
// client gives up meanwhile, the request is still carried out, as by a
// server that was merely slow. OnRequest hears of a held request when the
// hold starts (Status 0).
//
// After moves the fault past the write: the request is carried out first
// (it takes effect and is in Effects), then its answer is lost the same
// ways: held for Hang, then Reset or replaced by Status. Real Graph does
// both: it applies a write and answers 5xx, or applies it and never
// answers (the client times out). Without After, a Status or Reset fault
// refuses the request before anything happens. After is for Graph
// requests; on the token endpoint a fault always comes first.
type Fault struct {
	Method     string
	PathPrefix string
	PathSuffix string
	Status     int
	RetryAfter time.Duration
	Count      int // < 0: forever
	Body       string
	Hang       time.Duration
	Reset      bool
	After      bool
}

// InjectFault adds a fault; faults are matched in the order injected.
func (s *Server) InjectFault(f Fault) {
	if f.Count == 0 {
		return // nothing to inject
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Faults returns the faults not yet spent, with what is left of their
// Count, in the order injected: a test can check that its faults were met.
func (s *Server) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fault, len(s.faults))
	for i, f := range s.faults {
		out[i] = *f
	}
	return out
}

// ClearFaults removes all faults.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns a copy of the first fault matching the request and
// spends one of its Count.
func (s *Server) takeFault(method, path string) (Fault, bool) {
	graph := strings.HasPrefix(path, graphPrefix+"/") || path == graphPrefix
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Method != "" && !strings.EqualFold(f.Method, method) {
			continue
		}
		if f.PathPrefix == "" && !graph || !strings.HasPrefix(path, f.PathPrefix) || !strings.HasSuffix(path, f.PathSuffix) {
			continue
		}
		hit := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return hit, true
	}
	return Fault{}, false
}

// hang waits for d, the request's end, or the server's close, whichever
// comes first.
func (s *Server) hang(done <-chan struct{}, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	case <-s.closing:
	}
}

// faultReply is the answer a Status fault gives.
func faultReply(f Fault) reply {
	var r reply
	if f.Body != "" {
		r = reply{status: f.Status, body: []byte(f.Body)}
		r.setHeader("Content-Type", plainJSON)
	} else {
		r = errorReply(f.Status, faultCode(f.Status), fmt.Sprintf("Injected fault: %d %s.", f.Status, http.StatusText(f.Status)))
	}
	if f.RetryAfter > 0 {
		r.setHeader("Retry-After", retryAfterValue(f.RetryAfter))
	}
	return r
}

// faultCode is the error code Graph uses for the common transient statuses.
func faultCode(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return codeTooManyRequests
	case http.StatusServiceUnavailable:
		return codeServiceUnavailable
	case http.StatusGatewayTimeout:
		return "gatewayTimeout"
	case http.StatusInternalServerError:
		return "generalException"
	case http.StatusBadGateway:
		return "badGateway"
	}
	return "injectedFault"
}

// resetItemReply stands in for a connection reset inside a $batch.
func resetItemReply() reply {
	return errorReply(http.StatusServiceUnavailable, codeServiceUnavailable, "Injected fault: connection reset while serving the batch item.")
}

// afterItem applies an After fault to a $batch item already carried out
// (rep is its real answer).
func (s *Server) afterItem(c *call, f Fault, rep reply) reply {
	if f.Hang > 0 {
		s.held(Request{Time: c.arrived, Method: c.method, Path: c.path, Query: c.rawQuery, Header: c.header,
			Body: c.body, BatchID: c.batchID, ItemID: c.itemID})
	}
	s.hang(c.done, f.Hang)
	switch {
	case f.Reset:
		return resetItemReply()
	case f.Status > 0:
		return faultReply(f)
	}
	return rep
}

// Effect is a Graph request that took effect in the simulated tenant,
// whatever its client was answered (an After fault may have lost the
// answer): a write (PATCH, POST, DELETE) its handler accepted, and a group
// add refused with "One or more added object references already exist",
// which is the same add made again. Tests that check exactly-once count
// these, not answers: two effects of one kind for one user are a
// duplicate.
type Effect struct {
	Time    time.Time // when the request arrived
	Method  string
	Path    string // as in Request: "/v1.0/users/{id}/revokeSignInSessions"
	Body    []byte
	Status  int  // the handler's answer, before any After fault
	Repeat  bool // it found the change made already (the group add's 400)
	BatchID string
	ItemID  string
}

// recordEffect logs a handled request if it took effect (see Effect).
// Subscriptions are the client's plumbing, not the tenant's state, and
// are left out.
func (s *Server) recordEffect(c *call, rep reply) {
	if c.method == http.MethodGet || len(c.segs) > 0 && strings.EqualFold(c.segs[0], "subscriptions") ||
		len(c.segs) > 0 && strings.EqualFold(c.segs[len(c.segs)-1], "checkMemberGroups") {
		return
	}
	repeat := rep.status == http.StatusBadRequest && strings.Contains(string(rep.body), "added object references already exist")
	if (rep.status < 200 || rep.status > 299) && !repeat {
		return
	}
	e := Effect{Time: c.arrived, Method: c.method, Path: c.path, Body: c.body, Status: rep.status, Repeat: repeat,
		BatchID: c.batchID, ItemID: c.itemID}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.effects) >= maxLog {
		s.effects = slices.Delete(s.effects, 0, maxLog/2)
	}
	s.effects = append(s.effects, e)
}

// Effects returns every request that took effect since Start (or
// ResetEffects), oldest first.
func (s *Server) Effects() []Effect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.effects)
}

// ResetEffects empties the effects log.
func (s *Server) ResetEffects() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.effects = nil
}
