package auditship

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/pwsync/pwsync/shared/events"
)

// MaxIngestionBody is the Logs Ingestion API's limit per call (1 MB,
// Azure Monitor service limits), with room for the array's brackets.
const MaxIngestionBody = 1_000_000

// SentinelConfig configures the Logs Ingestion API sink.
type SentinelConfig struct {
	Endpoint   string // data collection endpoint, https://...
	RuleID     string // DCR immutable ID
	Stream     string
	APIVersion string
	Scope      string
	Credential azcore.TokenCredential
	HTTP       *http.Client
	MaxField   int
	MaxBody    int // 0 = MaxIngestionBody
}

// SentinelRow is one row of the DCR's input stream (deployments/sentinel:
// the table schema declares these columns).
type SentinelRow struct {
	TimeGenerated     time.Time `json:"TimeGenerated"`
	Kind              string    `json:"Kind"`
	EventId           string    `json:"EventId,omitempty"`
	ActionId          string    `json:"ActionId,omitempty"`
	Rule              string    `json:"Rule,omitempty"`
	Action            string    `json:"Action,omitempty"`
	Step              string    `json:"Step,omitempty"`
	UserPrincipalName string    `json:"UserPrincipalName,omitempty"`
	UserObjectGuid    string    `json:"UserObjectGuid,omitempty"`
	UserDomain        string    `json:"UserDomain,omitempty"`
	CloudUserId       string    `json:"CloudUserId,omitempty"`
	Outcome           string    `json:"Outcome"`
	HttpStatus        int       `json:"HttpStatus,omitempty"`
	LatencyMs         float64   `json:"LatencyMs,omitempty"`
	Detail            string    `json:"Detail,omitempty"`
	AdminPrincipal    string    `json:"AdminPrincipal,omitempty"`
	AdminMethod       string    `json:"AdminMethod,omitempty"`
	AdminPath         string    `json:"AdminPath,omitempty"`
}

func sentinelRow(r events.AuditRecord) SentinelRow {
	row := SentinelRow{TimeGenerated: r.Time.UTC(), Kind: r.Kind, EventId: r.EventID, ActionId: r.ActionID, Rule: r.Rule,
		Action: r.Action, Step: r.Step, UserPrincipalName: r.User.UPN, UserObjectGuid: r.User.ObjectGUID,
		UserDomain: r.User.Domain, CloudUserId: firstNonEmpty(r.CloudID, r.User.CloudID), Outcome: r.Outcome,
		HttpStatus: r.HTTPStatus, LatencyMs: r.LatencyMS, Detail: r.Detail}
	if a := r.Admin; a != nil {
		row.AdminPrincipal, row.AdminMethod, row.AdminPath = a.Principal, a.Method, a.Path
	}
	return row
}

type sentinelSink struct {
	cfg SentinelConfig
	url string
}

// NewSentinel returns a Logs Ingestion API sink.
func NewSentinel(cfg SentinelConfig) Sink {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = MaxIngestionBody
	}
	u := fmt.Sprintf("%s/dataCollectionRules/%s/streams/%s?api-version=%s", trimSlash(cfg.Endpoint),
		url.PathEscape(cfg.RuleID), url.PathEscape(cfg.Stream), url.QueryEscape(cfg.APIVersion))
	return &sentinelSink{cfg: cfg, url: u}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// partialError: the sink accepted the first Accepted records of the
// batch (they are acked), and failed on the rest.
type partialError struct {
	Accepted int
	Err      error
}

func (e *partialError) Error() string {
	return fmt.Sprintf("%d records accepted, then: %v", e.Accepted, e.Err)
}
func (e *partialError) Unwrap() error { return e.Err }

// retryAfterError: the sink asked to be called again after After (429).
type retryAfterError struct {
	After time.Duration
	Err   error
}

func (e *retryAfterError) Error() string { return fmt.Sprintf("retry after %s: %v", e.After, e.Err) }
func (e *retryAfterError) Unwrap() error { return e.Err }

// errTooLarge is a 413: the call was above the API's size limit.
var errTooLarge = errors.New("413 request entity too large")

// Send posts the batch in calls within the size limit, in order. A 413
// splits the call in two (the limit may be lower than configured).
func (s *sentinelSink) Send(ctx context.Context, recs []events.AuditRecord) error {
	rows := make([][]byte, len(recs))
	for i, r := range recs {
		b, err := json.Marshal(sentinelRow(bounded(r, s.cfg.MaxField)))
		if err != nil {
			return fmt.Errorf("sentinel: encoding a row: %w", err)
		}
		rows[i] = b
	}
	done := 0
	for done < len(rows) {
		n := s.fit(rows[done:])
		for {
			err := s.post(ctx, rows[done:done+n])
			if errors.Is(err, errTooLarge) && n > 1 {
				n /= 2
				continue
			}
			if err != nil {
				if done > 0 {
					return &partialError{Accepted: done, Err: err}
				}
				return err
			}
			break
		}
		done += n
	}
	return nil
}

// fit is how many rows make one call within MaxBody (at least one: a row
// is at most max_field per value, far below the limit).
func (s *sentinelSink) fit(rows [][]byte) int {
	size := 2 // [ ]
	for i, r := range rows {
		size += len(r) + 1
		if size > s.cfg.MaxBody && i > 0 {
			return i
		}
	}
	return len(rows)
}

func (s *sentinelSink) post(ctx context.Context, rows [][]byte) error {
	tok, err := s.cfg.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{s.cfg.Scope}})
	if err != nil {
		return fmt.Errorf("sentinel: token for %s: %w", s.cfg.Scope, err)
	}
	body := make([]byte, 0, s.cfg.MaxBody)
	body = append(body, '[')
	for i, r := range rows {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, r...)
	}
	body = append(body, ']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sentinel: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("sentinel: posting %d rows: %w", len(rows), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return errTooLarge
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		after := 10 * time.Second
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			after = time.Duration(secs) * time.Second
		}
		return &retryAfterError{After: after, Err: fmt.Errorf("sentinel: %s: %s", resp.Status, clip(string(msg), 300))}
	}
	return fmt.Errorf("sentinel: %s: %s", resp.Status, clip(string(msg), 300))
}

func (s *sentinelSink) Close() error { return nil }
