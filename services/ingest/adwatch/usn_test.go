package adwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// dcIdentity reads what the USN cursor keys on, as cfg's account sees it.
func dcIdentity(t *testing.T, cfg Config) (rootDSE, string) {
	t.Helper()
	w, err := New(cfg, nopSink{}, nopCursors{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dse, err := readRootDSE(c)
	if err != nil {
		t.Fatal(err)
	}
	id, err := readInvocationID(c, dse.DSServiceName)
	if err != nil {
		t.Fatalf("as %s: %v", cfg.BindDN, err)
	}
	return dse, id
}

// TestUSNCursorKeyedByInvocationID: a USN cursor of the same host but
// another invocationId (the DC was restored from a backup), or with a
// watermark above the DC's highestCommittedUSN (USNs rolled back), means a
// full resync, warned and audited; an old cursor without an invocationId on
// the same host is migrated without one. The watcher binds as a plain user,
// as usn mode is meant for: the invocationId must be readable by it.
func TestUSNCursorKeyedByInvocationID(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	users := dc.CreateUsers(t, ou, "inv", 3)
	reader := dc.CreateUser(t, ou, "inv-reader", adtest.UserOpts{})
	cfg := dcConfig(dc)
	cfg.Mode, cfg.BaseDN, cfg.PollInterval = ModeUSN, ou, 200*time.Millisecond
	cfg.BindDN, cfg.BindPassword = reader.UPN, adtest.DefaultPassword
	dse, id := dcIdentity(t, cfg)
	const otherID = "0b7e8a8c-0000-4000-8000-000000000001"

	tests := []struct {
		name       string
		cursor     usnCursor
		wantResync bool
		wantReason string // the audit record's outcome and the warning's reason
	}{
		{"restored_dc", usnCursor{DC: dse.DNSHostName, InvocationID: otherID, USN: dse.HighestCommittedUSN}, true, "invocation_id_changed"},
		{"usn_rolled_back", usnCursor{DC: dse.DNSHostName, InvocationID: id, USN: dse.HighestCommittedUSN + 1_000_000}, true, "usn_rolled_back"},
		// written by an older pwsync: same host, no invocationId
		{"old_format_migrated", usnCursor{DC: dse.DNSHostName, USN: dse.HighestCommittedUSN}, false, ""},
		{"same_dc", usnCursor{DC: dse.DNSHostName, InvocationID: id, USN: dse.HighestCommittedUSN}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			kv, err := natsx.Bucket(ctx, conn.JS, natsx.BucketCursors)
			if err != nil {
				t.Fatal(err)
			}
			cursors := KVCursors(kv)
			raw, _ := json.Marshal(tt.cursor)
			if err := cursors.Save(ctx, cfg.cursorKey(ModeUSN), raw); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			sink := &recSink{}
			w, err := New(cfg, sink, cursors, zerolog.New(&logs), WithAudit(audit.NewWriter(natsx.NewPublisher(conn.JS), nil)))
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx) }()
			defer func() { stop(); <-done }()
			r := &running{w: w}
			r.waitReady(t, fullSyncWait)

			full := 0
			for _, p := range sink.under(ou, nil) {
				if p.FullSync {
					full++
				}
			}
			if want := map[bool]int{true: len(users) + 1, false: 0}[tt.wantResync]; full != want {
				t.Fatalf("%d users published by a full sync, want %d", full, want)
			}

			// the cursor now carries the DC's own invocationId
			saved, err := cursors.Load(ctx, cfg.cursorKey(ModeUSN))
			if err != nil {
				t.Fatal(err)
			}
			var cur usnCursor
			if err := json.Unmarshal(saved, &cur); err != nil || cur.InvocationID != id || !strings.EqualFold(cur.DC, dse.DNSHostName) {
				t.Fatalf("saved cursor %s (%v), want host %s and invocationId %s", saved, err, dse.DNSHostName, id)
			}

			var recs []events.AuditRecord
			if err := audit.Read(ctx, conn.JS, audit.Query{Kinds: []string{auditKind}}, func(r events.AuditRecord) error {
				recs = append(recs, r)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var warned []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "warn" && rec["reason"] != nil {
					warned = append(warned, rec)
				}
			}
			if !tt.wantResync {
				if len(recs) != 0 || len(warned) != 0 {
					t.Fatalf("no resync, yet audit records %+v and warnings %v", recs, warned)
				}
				return
			}
			if len(recs) != 1 || recs[0].Action != "usn_full_resync" || recs[0].Outcome != tt.wantReason ||
				!strings.Contains(recs[0].Detail, dse.DNSHostName) || !strings.Contains(recs[0].Detail, id) {
				t.Fatalf("audit records %+v, want one usn_full_resync %s naming %s and invocationId %s", recs, tt.wantReason, dse.DNSHostName, id)
			}
			if len(warned) != 1 || warned[0]["reason"] != tt.wantReason || warned[0]["invocation_id"] != id {
				t.Fatalf("warnings %v, want one with reason %s and invocation_id %s\n%s", warned, tt.wantReason, id, logs.String())
			}
		})
	}
}

func TestRolledBack(t *testing.T) {
	const a, b = "aaaaaaaa-0000-4000-8000-000000000000", "bbbbbbbb-0000-4000-8000-000000000000"
	s := &usnPoll{}
	tests := []struct {
		name string
		cur  usnCursor
		hcu  int64
		id   string
		want bool
	}{
		{"same", usnCursor{InvocationID: a, USN: 100}, 150, a, false},
		{"same_case_aside", usnCursor{InvocationID: strings.ToUpper(a), USN: 100}, 100, a, false},
		{"new_invocation_id", usnCursor{InvocationID: a, USN: 100}, 150, b, true},
		{"usn_below_watermark", usnCursor{InvocationID: a, USN: 100}, 99, a, true},
		{"old_cursor", usnCursor{USN: 100}, 150, a, false},
		{"old_cursor_usn_below", usnCursor{USN: 100}, 50, a, true},
		{"id_unreadable", usnCursor{InvocationID: a, USN: 100}, 150, "", false},
	}
	for _, tt := range tests {
		if got := s.rolledBack(tt.cur, rootDSE{HighestCommittedUSN: tt.hcu}, tt.id); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
