package audit

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// Exporter writes records as JSON lines or CSV.
type Exporter struct {
	jl  *json.Encoder
	csv *csv.Writer
}

// CSVHeader are the CSV columns.
var CSVHeader = []string{"time", "kind", "event_id", "action_id", "rule", "action", "step", "upn", "object_guid",
	"cloud_id", "outcome", "http_status", "latency_ms", "detail", "principal", "method", "path"}

// NewExporter returns an exporter for format "jsonl" or "csv".
func NewExporter(w io.Writer, format string) (*Exporter, error) {
	switch format {
	case "jsonl", "":
		return &Exporter{jl: json.NewEncoder(w)}, nil
	case "csv":
		c := csv.NewWriter(w)
		if err := c.Write(CSVHeader); err != nil {
			return nil, err
		}
		return &Exporter{csv: c}, nil
	}
	return nil, fmt.Errorf("format must be jsonl or csv (got %q)", format)
}

// Write adds one record.
func (e *Exporter) Write(r events.AuditRecord) error {
	if e.jl != nil {
		return e.jl.Encode(r)
	}
	var principal, method, path string
	if r.Admin != nil {
		principal, method, path = r.Admin.Principal, r.Admin.Method, r.Admin.Path
	}
	status, latency := "", ""
	if r.HTTPStatus != 0 {
		status = strconv.Itoa(r.HTTPStatus)
	}
	if r.LatencyMS != 0 {
		latency = strconv.FormatFloat(r.LatencyMS, 'f', 3, 64)
	}
	return e.csv.Write([]string{r.Time.UTC().Format(time.RFC3339Nano), r.Kind, r.EventID, r.ActionID, r.Rule, r.Action,
		r.Step, r.User.UPN, r.User.ObjectGUID, r.CloudID, r.Outcome, status, latency, csvSafe(r.Detail), principal, method, path})
}

// Flush ends the export.
func (e *Exporter) Flush() error {
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	return nil
}

// csvSafe defuses spreadsheet formulas in free text (details quote Graph's
// and LDAP's answers, which an attacker may influence).
func csvSafe(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}

// ParseSince reads "24h", "7d" (relative to now) or an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if n := len(s); n > 1 && s[n-1] == 'd' {
		if d, err := strconv.Atoi(s[:n-1]); err == nil && d >= 0 && d <= 100*366 { // no overflow
			return now.Add(-time.Duration(d) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since: want a duration (24h, 7d) or an RFC 3339 time (got %q)", s)
}
