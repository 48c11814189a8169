// Package console holds the admin API's read endpoints (users, audit, dead
// letters, live stream, latency, policy) and the web console that uses them,
// all registered on an adminapi.Server.
package console

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/policy"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/services/evaluator/userview"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Deps are what the endpoints read from.
type Deps struct {
	JS       jetstream.JetStream
	Policy   rules.Policy
	Location *time.Location // times in policy explanations; nil = UTC
	Now      func() time.Time
	Log      zerolog.Logger
}

type api struct {
	Deps
	audit *audit.Writer
}

// Register adds the endpoints and the console to s.
func Register(s *adminapi.Server, d Deps) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Location == nil {
		d.Location = time.UTC
	}
	a := &api{Deps: d, audit: audit.NewWriter(natsx.NewPublisher(d.JS), d.Now)}
	s.HandleFunc("GET /api/v1/whoami", adminapi.RoleViewer, adminapi.WhoAmI)
	s.HandleFunc("GET /api/v1/users", adminapi.RoleViewer, a.searchUsers)
	s.HandleFunc("GET /api/v1/users/{upn}", adminapi.RoleViewer, a.user)
	s.HandleFunc("GET /api/v1/audit", adminapi.RoleViewer, a.exportAudit)
	s.HandleFunc("GET /api/v1/deadletters", adminapi.RoleViewer, a.deadLetters)
	s.HandleFunc("POST /api/v1/deadletters/{seq}/retry", adminapi.RoleOperator, a.retryDeadLetter)
	s.HandleFunc("GET /api/v1/live", adminapi.RoleViewer, a.live)
	s.HandleFunc("GET /api/v1/latency", adminapi.RoleViewer, a.latency)
	s.HandleFunc("GET /api/v1/policy", adminapi.RoleViewer, a.policy)
	s.HandleFunc("GET /api/v1/policy/explain/{upn}", adminapi.RoleViewer, a.explain)
	registerStatic(s)
}

func (a *api) ctx(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.Log.Error().Err(err).Str("path", r.URL.Path).Msg("admin request failed")
	if errors.Is(err, context.DeadlineExceeded) {
		adminapi.Error(w, http.StatusGatewayTimeout, "timed out reading pwsync's state")
		return
	}
	adminapi.Error(w, http.StatusInternalServerError, "internal error (see pwsync's log)")
}

func (a *api) searchUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	if len(q) < 2 {
		adminapi.Error(w, http.StatusBadRequest, "q: at least 2 characters")
		return
	}
	limit := 25
	if l, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && l > 0 && l <= 200 {
		limit = l
	}
	ctx, cancel := a.ctx(r, 30*time.Second)
	defer cancel()
	m, err := userview.Search(ctx, a.JS, q, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"users": m})
}

func (a *api) user(w http.ResponseWriter, r *http.Request) {
	history := 50
	if h, err := strconv.Atoi(r.URL.Query().Get("history")); err == nil && h > 0 && h <= 1000 {
		history = h
	}
	ctx, cancel := a.ctx(r, 30*time.Second)
	defer cancel()
	v, err := userview.Build(ctx, a.JS, r.PathValue("upn"), a.Policy, a.Now(), history)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !v.Found {
		adminapi.Error(w, http.StatusNotFound, "no AD user with this userPrincipalName has been seen")
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, v)
}

func (a *api) exportAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := audit.ParseSince(q.Get("since"), a.Now())
	if err != nil {
		adminapi.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	format := q.Get("format")
	if format != "" && format != "jsonl" && format != "csv" {
		adminapi.Error(w, http.StatusBadRequest, "format: jsonl or csv")
		return
	}
	ctype := "application/x-ndjson"
	if format == "csv" {
		ctype = "text/csv; charset=utf-8"
	}
	w.Header().Set("Content-Type", ctype)
	ext := map[string]string{"csv": "csv"}[format]
	if ext == "" {
		ext = "jsonl"
	}
	w.Header().Set("Content-Disposition", `attachment; filename="pwsync-audit.`+ext+`"`)
	ex, err := audit.NewExporter(w, format)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := a.ctx(r, 5*time.Minute)
	defer cancel()
	err = audit.Read(ctx, a.JS, audit.Query{Since: since, User: q.Get("user")}, ex.Write)
	if err == nil {
		err = ex.Flush()
	}
	if err != nil {
		// The status is sent; a truncated export must not look complete.
		a.Log.Error().Err(err).Msg("audit export interrupted")
		panic(http.ErrAbortHandler)
	}
}

func (a *api) policy(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	policy.Describe(&b, a.Policy)
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"text": b.String(), "policy": a.Policy})
}

func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.ctx(r, 30*time.Second)
	defer cancel()
	v, err := userview.Build(ctx, a.JS, r.PathValue("upn"), a.Policy, a.Now(), 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !v.Found {
		adminapi.Error(w, http.StatusNotFound, "no AD user with this userPrincipalName has been seen")
		return
	}
	var b bytes.Buffer
	policy.Explain(&b, a.Policy, v.State, policy.Facts{Now: a.Now(), Loc: a.Location, JoinedCloudID: v.JoinedCloudID, Ledger: policy.KVLedger(ctx, a.JS)})
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"upn": v.UPN, "text": b.String()})
}

// LatencyPoint is one AD change -> Graph write measurement.
type LatencyPoint struct {
	Time      time.Time `json:"time"`
	LatencyMS float64   `json:"latency_ms"`
	Action    string    `json:"action"`
	UPN       string    `json:"upn,omitempty"`
}

// latency: the actuator audits each finished action with LatencyMS = event
// observed by ingest -> outcome; successful Graph-writing actions are the
// points (alerts and notices write nothing to the directory).
func (a *api) latency(w http.ResponseWriter, r *http.Request) {
	window := time.Hour
	if s := r.URL.Query().Get("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > 7*24*time.Hour {
			adminapi.Error(w, http.StatusBadRequest, "window: a duration up to 168h")
			return
		}
		window = d
	}
	ctx, cancel := a.ctx(r, time.Minute)
	defer cancel()
	points := []LatencyPoint{}
	err := audit.Read(ctx, a.JS, audit.Query{Since: a.Now().Add(-window), Kinds: []string{"action"}}, func(rec events.AuditRecord) error {
		if p, ok := latencyPoint(rec); ok {
			points = append(points, p)
		}
		return nil
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"window": window.String(), "points": points, "summary": summarize(points)})
}

func latencyPoint(rec events.AuditRecord) (LatencyPoint, bool) {
	if rec.Kind != "action" || rec.Outcome != events.OutcomeOK || rec.LatencyMS <= 0 ||
		rec.Action == string(events.ActionAlert) || rec.Action == string(events.ActionNotify) {
		return LatencyPoint{}, false
	}
	return LatencyPoint{Time: rec.Time, LatencyMS: rec.LatencyMS, Action: rec.Action, UPN: rec.User.UPN}, true
}

// Summary is the distribution of latency points.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(ps []LatencyPoint) Summary {
	if len(ps) == 0 {
		return Summary{}
	}
	v := make([]float64, len(ps))
	for i, p := range ps {
		v[i] = p.LatencyMS
	}
	slices.Sort(v)
	q := func(f float64) float64 { return v[min(len(v)-1, int(f*float64(len(v))))] }
	return Summary{Count: len(v), P50: q(0.5), P99: q(0.99), Max: v[len(v)-1]}
}
