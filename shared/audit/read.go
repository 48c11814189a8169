package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Query selects audit records.
type Query struct {
	Since time.Time // stored at or after; zero = from the start of the stream
	// User matches a record's UPN (case-insensitive) or AD objectGUID; "" = all.
	User  string
	Kinds []string // empty = all
}

// Match reports whether r is selected (Since is applied by the stream).
func (q Query) Match(r events.AuditRecord) bool {
	if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, r.Kind) {
		return false
	}
	if q.User == "" {
		return true
	}
	return strings.EqualFold(r.User.UPN, q.User) || strings.EqualFold(r.User.ObjectGUID, q.User)
}

// Read calls fn for each selected record in stream order, from q.Since to
// the last record stored when Read started. fn's error stops the scan.
func Read(ctx context.Context, js jetstream.JetStream, q Query, fn func(events.AuditRecord) error) error {
	// Deleted when done (below); the threshold is the fallback if that
	// fails: pollers (the console, pwsync user) must not pile consumers up
	// to the account's limit.
	cfg := jetstream.OrderedConsumerConfig{InactiveThreshold: 30 * time.Second}
	if len(q.Kinds) > 0 {
		for _, k := range q.Kinds {
			cfg.FilterSubjects = append(cfg.FilterSubjects, "audit."+k)
		}
	}
	if !q.Since.IsZero() {
		since := q.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, natsx.StreamAudit, cfg)
	if err != nil {
		return fmt.Errorf("reading audit: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading audit: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, natsx.StreamAudit, info.Name)
	}()
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("reading audit: %w", err)
		}
		n := uint64(0)
		for m := range batch.Messages() {
			n++
			var r events.AuditRecord
			if json.Unmarshal(m.Data(), &r) != nil || !q.Match(r) {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && n == 0 {
			return fmt.Errorf("reading audit: %w", err)
		}
		if n == 0 && ctx.Err() != nil {
			return fmt.Errorf("reading audit: %w", ctx.Err())
		}
		pending -= min(n, pending)
	}
	return nil
}

// Last returns the last limit selected records.
func Last(ctx context.Context, js jetstream.JetStream, q Query, limit int) ([]events.AuditRecord, error) {
	var out []events.AuditRecord
	err := Read(ctx, js, q, func(r events.AuditRecord) error {
		out = append(out, r)
		if limit > 0 && len(out) > limit {
			out = out[1:]
		}
		return nil
	})
	return out, err
}
