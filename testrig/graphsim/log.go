package graphsim

import (
	"maps"
	"net/http"
	"slices"
	"time"
)

// Request is one answered Graph request. Each $batch item is its own entry
// (BatchID and ItemID set); the outer $batch POST is logged too, with the
// same BatchID and an empty ItemID. Token and discovery requests are not
// logged (see Stats.Tokens).
type Request struct {
	Time     time.Time   // when the request arrived
	Method   string      // e.g. "PATCH"
	Path     string      // e.g. "/v1.0/users/{id}" with the real id; batch items: the item url prefixed with /v1.0
	Query    string      // raw query, e.g. "$select=passwordProfile"
	Header   http.Header // request headers (batch items: the item's headers)
	Body     []byte      // decompressed request body
	Status   int         // status answered
	BatchID  string      // set on $batch items and on the outer $batch POST
	ItemID   string      // the item's id inside its batch
	Duration time.Duration
}

// Stats counts what the simulator answered since Start.
type Stats struct {
	Writes    int // writes accepted against the write budget (batch items included)
	Throttled int // writes refused with 429 by the write budget
	Tokens    int // access tokens issued
	// Refusals by the sendMail and Teams limits: "limit violations".
	// MailThrottled counts every sendMail refusal: by messages per minute,
	// by recipients per day (MailDayThrottled of them) and by the
	// mailbox's concurrent requests (MailConcurrencyThrottled).
	MailThrottled, ActivityThrottled           int
	MailDayThrottled, MailConcurrencyThrottled int
	// MaxMailInFlight is the most sendMail requests seen in flight on one
	// mailbox at once.
	MaxMailInFlight int
	ByStatus        map[int]int // every logged request (batch items and outer $batch) by status
}

// maxLog bounds the request log of a long-running `pwsync graphsim`.
const maxLog = 200_000

// logRequest adds an entry to the log and returns the function that calls
// the OnRequest hook. Standalone requests are logged before the answer is
// written, so that a client that got its answer finds it in Requests(), and
// call the hook after, outside the lock, so that it may call back.
func (s *Server) logRequest(r Request) (notify func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) >= maxLog {
		s.requests = slices.Delete(s.requests, 0, maxLog/2)
	}
	s.requests = append(s.requests, r)
	s.stats.ByStatus[r.Status]++
	fn := s.onReq
	return func() {
		if fn != nil {
			fn(r)
		}
	}
}

// held reports a request a Hang fault starts holding to the OnRequest hook
// (not to the log: it is logged once answered).
func (s *Server) held(r Request) {
	s.mu.Lock()
	fn := s.onReq
	s.mu.Unlock()
	if fn != nil {
		fn(r)
	}
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetRequests empties the request log (Stats are kept).
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// OnRequest sets a hook called after each Graph request is answered, e.g.
// to measure latency; nil clears it. A request held by a Hang fault is
// also reported when the hold starts, with Status 0, so that a test can act
// while it is held (kill the client, say); it is reported again when
// answered. The hook runs on the request's goroutine: keep it short.
func (s *Server) OnRequest(fn func(Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReq = fn
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByStatus = maps.Clone(s.stats.ByStatus)
	return st
}

func (s *Server) countWrite(throttled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if throttled {
		s.stats.Throttled++
	} else {
		s.stats.Writes++
	}
}
