package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// LiveItem is one Server-Sent Event of /api/v1/live.
type LiveItem struct {
	Stream  string    `json:"stream"` // EVENTS | AUDIT
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject"`
	// EVENTS: what arrived.
	Source     string `json:"source,omitempty"`
	Type       string `json:"type,omitempty"`
	EventID    string `json:"event_id,omitempty"`
	UPN        string `json:"upn,omitempty"`
	MustChange *bool  `json:"must_change,omitempty"`
	// AUDIT: decisions, steps and outcomes.
	Record *events.AuditRecord `json:"record,omitempty"`
}

// maxUserFilter bounds ?user= (a UPN is at most 113 characters in AD).
const maxUserFilter = 256

// live streams events arriving and audit records (decisions, actions and
// their outcomes) as Server-Sent Events, from an ordered consumer on each
// stream starting `since` ago (default 10m, at most 24h). Admin requests
// are left out: the console's own calls would drown the rest. ?user= keeps
// the items whose UPN contains the text (case-insensitive), so that one
// user's story stays readable on a busy directory; items without a UPN
// (timers, policy changes) are then left out too.
func (a *api) live(w http.ResponseWriter, r *http.Request) {
	since := 10 * time.Minute
	if s := r.URL.Query().Get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > 24*time.Hour {
			adminapi.Error(w, http.StatusBadRequest, "since: a duration up to 24h")
			return
		}
		since = d
	}
	user := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("user")))
	if len(user) > maxUserFilter {
		adminapi.Error(w, http.StatusBadRequest, "user: at most 256 characters")
		return
	}
	keep := func(it LiveItem) bool { return user == "" || strings.Contains(strings.ToLower(it.UPN), user) }
	flusher, ok := w.(http.Flusher)
	if !ok {
		adminapi.Error(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	items := make(chan LiveItem, 256)
	start := a.Now().Add(-since)
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for _, stream := range []string{natsx.StreamEvents, natsx.StreamAudit} {
		stop, err := a.follow(ctx, stream, start, keep, items)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		stops = append(stops, stop)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": pwsync live\n\n")
	flusher.Flush()
	heartbeat := time.NewTicker(15 * time.Second)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flusher.Flush()
		case it := <-items:
			b, err := json.Marshal(it)
			if err != nil {
				continue
			}
			kind := "event"
			if it.Stream == natsx.StreamAudit {
				kind = "audit"
			}
			if _, err := fmt.Fprintf(w, "event: %s\nid: %s-%d\ndata: %s\n\n", kind, it.Stream, it.Seq, b); err != nil {
				return
			}
			// Send bursts together: flush when nothing else is waiting.
			if len(items) == 0 {
				flusher.Flush()
			}
		}
	}
}

// follow feeds the items keep accepts from stream until ctx ends; the
// returned func stops it.
func (a *api) follow(ctx context.Context, stream string, start time.Time, keep func(LiveItem) bool, items chan<- LiveItem) (func(), error) {
	cons, err := a.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
	if err != nil {
		return nil, fmt.Errorf("following %s: %w", stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		it, ok := liveItem(stream, m)
		if !ok || !keep(it) {
			return
		}
		select {
		case items <- it:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return nil, fmt.Errorf("following %s: %w", stream, err)
	}
	return cc.Stop, nil
}

func liveItem(stream string, m jetstream.Msg) (LiveItem, bool) {
	meta, err := m.Metadata()
	if err != nil {
		return LiveItem{}, false
	}
	it := LiveItem{Stream: stream, Seq: meta.Sequence.Stream, Time: meta.Timestamp, Subject: m.Subject()}
	switch stream {
	case natsx.StreamEvents:
		var env events.Envelope
		if json.Unmarshal(m.Data(), &env) != nil {
			return LiveItem{}, false
		}
		it.Source, it.Type, it.EventID = env.Source, env.Type, env.ID
		var u struct {
			UPN        string `json:"upn"`
			PwdLastSet *int64 `json:"pwd_last_set"`
		}
		if json.Unmarshal(env.Data, &u) == nil {
			it.UPN = u.UPN
			if env.Source == events.SourceAD && u.PwdLastSet != nil {
				mc := *u.PwdLastSet == 0
				it.MustChange = &mc
			}
		}
	case natsx.StreamAudit:
		var rec events.AuditRecord
		if json.Unmarshal(m.Data(), &rec) != nil || rec.Kind == events.KindAdmin && rec.Action == "" {
			return LiveItem{}, false
		}
		it.Record, it.UPN, it.Time = &rec, rec.User.UPN, rec.Time
	}
	return it, true
}
