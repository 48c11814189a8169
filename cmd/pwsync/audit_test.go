package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestAuditExportCommand runs `pwsync audit export` against a real NATS
// (the embedded server's listen address, as an operator would).
func TestAuditExportCommand(t *testing.T) {
	emb, conn := natstest.Run(t)
	ctx := context.Background()
	w := audit.NewWriter(natsx.NewPublisher(conn.JS), nil)
	for _, r := range []events.AuditRecord{
		{Kind: "decision", Rule: "forced-change", User: events.UserRef{UPN: "alice@example.test", ObjectGUID: "g1"}, Outcome: "act"},
		{Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "alice@example.test", ObjectGUID: "g1"}, Outcome: "ok", HTTPStatus: 204, LatencyMS: 312.5},
		{Kind: "action", Action: "require_password_change", User: events.UserRef{UPN: "bob@example.test", ObjectGUID: "g2"}, Outcome: "failed", Detail: "=cmd|' /C calc'!A0"},
	} {
		if err := w.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(t.TempDir(), "pwsync.yaml")
	cfg := "nats:\n  url: " + emb.ClientURL() + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		lines int
		want  []string
		not   []string
	}{
		{"jsonl all", []string{"--since", "1h"}, 3, []string{`"upn":"alice@example.test"`, `"latency_ms":312.5`}, nil},
		{"one user", []string{"--user", "ALICE@example.test"}, 2, []string{"forced-change"}, []string{"bob@"}},
		{"by guid", []string{"--user", "g2", "--format", "csv"}, 2, []string{"bob@example.test", "'=cmd"}, []string{"alice@"}},
		{"csv", []string{"--format", "csv", "--since", time.Now().Add(-time.Hour).Format(time.RFC3339)}, 4, []string{"time,kind,event_id", ",204,312.500,"}, nil},
		{"future", []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, 0, nil, []string{"alice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"audit", "export", "--config", cfgPath}, c.args...)
			if err := dispatch(ctx, args, &out, &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			s := out.String()
			if n := strings.Count(s, "\n"); n != c.lines {
				t.Errorf("%d lines, want %d:\n%s", n, c.lines, s)
			}
			for _, w := range c.want {
				if !strings.Contains(s, w) {
					t.Errorf("lacks %q:\n%s", w, s)
				}
			}
			for _, w := range c.not {
				if strings.Contains(s, w) {
					t.Errorf("has %q:\n%s", w, s)
				}
			}
			if strings.Contains(strings.Join(args, " "), "csv") {
				if _, err := csv.NewReader(strings.NewReader(s)).ReadAll(); err != nil {
					t.Errorf("invalid CSV: %v", err)
				}
			}
		})
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--format", "xml"}} {
		if err := dispatch(ctx, append([]string{"audit", "export", "--config", cfgPath}, bad...), &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
