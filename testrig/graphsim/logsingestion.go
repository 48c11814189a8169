package graphsim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The Azure Monitor Logs Ingestion API (what Microsoft Sentinel ingests
// custom logs through), served on the simulator's host as a data
// collection endpoint would be:
//
//	POST /dataCollectionRules/{DCR immutable ID}/streams/{stream}?api-version=2023-01-01
//	Authorization: Bearer <token for https://monitor.azure.com/.default>
//	Content-Type: application/json   (Content-Encoding: gzip allowed)
//	body: a JSON array of objects, the DCR stream's columns
//
// Answers: 204 accepted; 400 bad body; 401 no or wrong token (a Graph
// token is refused); 404 unknown rule or stream; 413 a call above the
// 1 MB limit (compressed or not); 429 with Retry-After when throttled
// (Throttle). Accepted rows are kept per rule and stream (Rows).

// monitorResource is the Logs Ingestion API's token audience.
const monitorResource = "https://monitor.azure.com"

// LogsIngestionMaxBody is the API's documented limit per call.
const LogsIngestionMaxBody = 1 << 20

// LogsIngestion is the simulator's Logs Ingestion API state.
type LogsIngestion struct {
	mu         sync.Mutex
	rules      map[string]bool // "dcr|stream"
	rows       map[string][]map[string]any
	maxBody    int
	throttle   int // the next throttle calls get 429
	retryAfter time.Duration
	calls      int
	refused    map[int]int // status -> count
}

// logsBySim keeps each simulator's state beside it (the Server's core
// stays as it is; the API is a separate Azure service).
var logsBySim sync.Map // *Server -> *LogsIngestion

// LogsIngestion returns the Logs Ingestion API state of this simulator.
func (s *Server) LogsIngestion() *LogsIngestion {
	v, _ := logsBySim.LoadOrStore(s, &LogsIngestion{rules: map[string]bool{}, rows: map[string][]map[string]any{},
		maxBody: LogsIngestionMaxBody, refused: map[int]int{}})
	return v.(*LogsIngestion)
}

// AddRule declares a data collection rule (immutable ID) with a stream.
func (l *LogsIngestion) AddRule(ruleID, stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rules[ruleID+"|"+stream] = true
}

// SetMaxBody lowers the size limit (tests of splitting); 0 = 1 MB.
func (l *LogsIngestion) SetMaxBody(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxBody = n
	if n == 0 {
		l.maxBody = LogsIngestionMaxBody
	}
}

// Throttle answers the next n calls 429 with Retry-After.
func (l *LogsIngestion) Throttle(n int, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttle, l.retryAfter = n, retryAfter
}

// Rows returns the rows accepted for a rule and stream, in arrival order.
func (l *LogsIngestion) Rows(ruleID, stream string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]map[string]any(nil), l.rows[ruleID+"|"+stream]...)
}

// Calls is the number of calls received; Refused counts them by status.
func (l *LogsIngestion) Calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// Refused counts refused calls with this status.
func (l *LogsIngestion) Refused(status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused[status]
}

func (s *Server) serveLogsIngestion(w http.ResponseWriter, r *http.Request, ruleID, stream string) {
	l := s.LogsIngestion()
	status, code, msg := l.accept(s, r, ruleID, stream)
	l.mu.Lock()
	l.calls++
	if status != http.StatusNoContent {
		l.refused[status]++
	}
	after := l.retryAfter
	l.mu.Unlock()
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(after.Round(time.Second)/time.Second)))
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

func (l *LogsIngestion) accept(s *Server, r *http.Request, ruleID, stream string) (int, string, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed", "Only POST is supported."
	}
	if r.URL.Query().Get("api-version") == "" {
		return http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter is required."
	}
	c, err := verifyHS256(s.tokenKey, strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
	if err != nil || c.Aud != monitorResource || !strings.EqualFold(c.Tid, s.opts.TenantID) || time.Now().After(time.Unix(c.Exp, 0)) {
		return http.StatusUnauthorized, "InvalidToken", "The access token is missing, expired, or not issued for https://monitor.azure.com."
	}
	l.mu.Lock()
	known, maxBody := l.rules[ruleID+"|"+stream], l.maxBody
	if l.throttle > 0 {
		l.throttle--
		l.mu.Unlock()
		return http.StatusTooManyRequests, "TooManyRequests", "Request rate exceeded for the data collection rule."
	}
	l.mu.Unlock()
	if !known {
		return http.StatusNotFound, "NotFound", fmt.Sprintf("Data collection rule %s with stream %s not found.", ruleID, stream)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, int64(maxBody)+1))
	if err != nil {
		return http.StatusBadRequest, "InvalidPayload", err.Error()
	}
	if len(raw) > maxBody {
		return http.StatusRequestEntityTooLarge, "ContentLengthLimitExceeded", fmt.Sprintf("The request body exceeds the limit of %d bytes.", maxBody)
	}
	body := raw
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return http.StatusBadRequest, "InvalidPayload", "The body is not valid gzip."
		}
		if body, err = io.ReadAll(io.LimitReader(zr, int64(maxBody)+1)); err != nil || len(body) > maxBody {
			return http.StatusRequestEntityTooLarge, "ContentLengthLimitExceeded", "The uncompressed body exceeds the limit."
		}
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return http.StatusUnsupportedMediaType, "UnsupportedMediaType", "Content-Type must be application/json."
	}
	var rows []map[string]any
	if err := json.Unmarshal(body, &rows); err != nil {
		return http.StatusBadRequest, "InvalidPayload", "The body must be a JSON array of objects."
	}
	l.mu.Lock()
	l.rows[ruleID+"|"+stream] = append(l.rows[ruleID+"|"+stream], rows...)
	l.mu.Unlock()
	return http.StatusNoContent, "", ""
}
