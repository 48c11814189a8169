package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Admin alerts go to a Teams Workflows webhook ("Post to a channel when a
// webhook request is received"). Workflows accept Adaptive Cards only (not
// the retired connectors' MessageCard), wrapped in a message envelope:
//
//	{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
//	  "contentUrl":null,"content":{"type":"AdaptiveCard","version":"1.4",...}}]}
//
// Action.Submit is not supported in webhook cards, so the card only has
// facts and, when there is one, an Action.OpenUrl.

// Alert is what an admin alert card says.
type Alert struct {
	Title   string
	Summary string
	Facts   [][2]string // name, value; empty values are left out
	Link    string      // optional Action.OpenUrl
	Time    time.Time
}

const adaptiveCardType = "application/vnd.microsoft.card.adaptive"

// card builds the Workflows payload for a.
func card(a Alert) map[string]any {
	body := []any{
		map[string]any{"type": "TextBlock", "text": a.Title, "weight": "Bolder", "size": "Medium",
			"color": "Attention", "wrap": true, "style": "heading"},
	}
	if a.Summary != "" {
		body = append(body, map[string]any{"type": "TextBlock", "text": a.Summary, "wrap": true})
	}
	var facts []any
	for _, f := range a.Facts {
		if f[1] != "" {
			facts = append(facts, map[string]any{"title": f[0], "value": f[1]})
		}
	}
	if !a.Time.IsZero() {
		facts = append(facts, map[string]any{"title": "Time", "value": a.Time.UTC().Format(time.RFC3339)})
	}
	if len(facts) > 0 {
		body = append(body, map[string]any{"type": "FactSet", "facts": facts})
	}
	content := map[string]any{
		"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
		"type":    "AdaptiveCard",
		"version": "1.4",
		"body":    body,
		"msteams": map[string]any{"width": "Full"},
	}
	if a.Link != "" {
		content["actions"] = []any{map[string]any{"type": "Action.OpenUrl", "title": "Open", "url": a.Link}}
	}
	return map[string]any{
		"type": "message",
		"attachments": []any{map[string]any{
			"contentType": adaptiveCardType,
			"contentUrl":  nil,
			"content":     content,
		}},
	}
}

// alertFromAction describes an ActionAlert (drift storm, writeback gap,
// failed campaign...).
func alertFromAction(a events.Action) Alert {
	title := "pwsync alert"
	if a.Rule != "" {
		title += ": " + a.Rule
	}
	return Alert{Title: title, Summary: a.Reason, Time: a.EventTime, Facts: [][2]string{
		{"Rule", a.Rule}, {"User", a.User.UPN}, {"Campaign", a.Campaign},
		{"Event", a.EventID}, {"Action", a.ID},
	}}
}

// webhookError is a refused post; status 0 for transport errors.
type webhookError struct {
	status     int
	retryAfter time.Duration
	msg        string
}

func (e *webhookError) Error() string {
	if e.status == 0 {
		return "workflows webhook: " + e.msg
	}
	return fmt.Sprintf("workflows webhook: status %d: %s", e.status, e.msg)
}

func (e *webhookError) retryable() bool {
	return e.status == 0 || e.status == http.StatusTooManyRequests || e.status == http.StatusRequestTimeout || e.status >= 500
}

// postCard posts the card. The URL carries a signature: it never appears
// in errors or logs.
func postCard(ctx context.Context, hc *http.Client, url string, a Alert) error {
	body, err := json.Marshal(card(a))
	if err != nil {
		return fmt.Errorf("encoding alert card: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &webhookError{msg: "invalid URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return &webhookError{msg: redactURL(err.Error(), url)}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Legacy connectors answered 200 with "...HTTP error 429" in the body;
	// treat that as the throttling it is.
	if resp.StatusCode/100 == 2 && !strings.Contains(string(msg), "HTTP error 429") {
		return nil
	}
	e := &webhookError{status: resp.StatusCode, msg: strings.TrimSpace(string(msg))}
	if resp.StatusCode/100 == 2 {
		e.status = http.StatusTooManyRequests
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.retryAfter = time.Duration(s) * time.Second
	}
	return e
}

func redactURL(s, url string) string {
	if url == "" {
		return s
	}
	s = strings.ReplaceAll(s, url, "[webhook url]")
	if i := strings.IndexByte(url, '?'); i >= 0 {
		s = strings.ReplaceAll(s, url[i:], "?[redacted]")
	}
	return s
}

// alert posts an ActionAlert to the Workflows webhook, once per action.
func (x *delivery) alert(ctx context.Context) error {
	s, a := x.s, x.a
	url := s.set.WorkflowsWebhookURL.Value()
	if url == "" {
		// No webhook: the alert is the audit record and the log line, as
		// before notifications existed.
		zerolog.Ctx(ctx).Error().Str("rule", a.Rule).Str("alert", a.Reason).Msg("alert")
		return x.finish(ctx, events.OutcomeOK, a.Reason, nil)
	}
	if a.DryRun {
		return x.finish(ctx, events.OutcomeDryRun, "would post the alert card", nil)
	}
	key := events.KeySafe("alert." + a.ID)
	sl, err := s.take(ctx, s.hooks, channelWebhook)
	if err != nil {
		return err
	}
	res, rev, entry, err := s.ledger.claim(ctx, key, a.ID, "webhook", "")
	if err != nil || res != claimed {
		sl.Done(ctx, false)
		if err != nil {
			return err
		}
		return x.ledgerSkip(ctx, res, entry)
	}
	err = postCard(ctx, s.hc, url, alertFromAction(a))
	sl.Done(ctx, true)
	countSend(channelWebhook, err)
	if err == nil {
		x.audit(ctx, "post_alert", events.OutcomeOK, 0, "workflows webhook")
		if err := s.ledger.sent(ctx, key, rev, entry); err != nil {
			return err
		}
		return x.finish(ctx, events.OutcomeOK, a.Reason, nil)
	}
	we := &webhookError{msg: err.Error()}
	errors.As(err, &we)
	attempts, lerr := s.ledger.failed(ctx, key, rev, entry, true)
	if lerr != nil {
		return lerr
	}
	x.audit(ctx, "post_alert", events.OutcomeFailed, we.status, err.Error())
	switch {
	case !we.retryable() || attempts >= s.set.MaxAttempts:
		return x.deadLetter(ctx, err)
	case we.retryAfter > 0:
		sl.Block(ctx, we.retryAfter)
		return &natsx.RetryLater{After: we.retryAfter, Err: err}
	}
	return err
}
