package audit

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"24h", now.Add(-24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"2026-03-01T00:00:00Z", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"-3d", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"2026-03-01", time.Time{}, true},
	}
	for _, c := range cases {
		got, err := ParseSince(c.in, now)
		if (err != nil) != c.err || !got.Equal(c.want) {
			t.Errorf("%q: %v %v, want %v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

func TestQueryMatch(t *testing.T) {
	r := events.AuditRecord{Kind: "step", User: events.UserRef{UPN: "Alice@Example.test", ObjectGUID: "g1"}}
	cases := []struct {
		q    Query
		want bool
	}{
		{Query{}, true},
		{Query{User: "alice@example.test"}, true},
		{Query{User: "G1"}, true},
		{Query{User: "bob@example.test"}, false},
		{Query{Kinds: []string{"action"}}, false},
		{Query{Kinds: []string{"action", "step"}, User: "g1"}, true},
	}
	for _, c := range cases {
		if got := c.q.Match(r); got != c.want {
			t.Errorf("%+v: %v, want %v", c.q, got, c.want)
		}
	}
}

func TestCSVExportDefusesFormulas(t *testing.T) {
	var b bytes.Buffer
	ex, err := NewExporter(&b, "csv")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"=HYPERLINK(\"x\")", "+1", "@SUM(A1)", "plain, with \"quotes\"\nand a newline"} {
		if err := ex.Write(events.AuditRecord{Kind: "step", Detail: d, Admin: &events.AdminRequest{Principal: "p", Method: "GET", Path: "/x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ex.Flush(); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || len(rows[0]) != len(CSVHeader) {
		t.Fatalf("rows %d", len(rows))
	}
	for _, row := range rows[1:4] {
		if !strings.HasPrefix(row[13], "'") {
			t.Errorf("formula not defused: %q", row[13])
		}
	}
	if rows[4][13] != "plain, with \"quotes\"\nand a newline" || rows[4][14] != "p" {
		t.Errorf("row: %q", rows[4])
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"24h", "7d", "2026-03-01T00:00:00Z", "d", "-1d", "99999999999999d"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err == nil && s != "" && got.After(now) && !strings.Contains(s, "T") {
			t.Fatalf("%q: a relative since in the future: %v", s, got)
		}
	})
}
