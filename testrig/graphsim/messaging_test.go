package graphsim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func mailBody(to ...string) map[string]any {
	var rcpts []any
	for _, a := range to {
		rcpts = append(rcpts, map[string]any{"emailAddress": map[string]any{"address": a}})
	}
	return map[string]any{
		"message": map[string]any{
			"subject":                "Your password expires in 7 days",
			"body":                   map[string]any{"contentType": "HTML", "content": "<p>Change it</p>"},
			"toRecipients":           rcpts,
			"internetMessageHeaders": []any{map[string]any{"name": "x-pwsync-id", "value": "n-1"}},
		},
		"saveToSentItems": false,
	}
}

func TestSendMail(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv) // synced has no mail
	sender := "/v1.0/users/" + cloud.UserPrincipalName + "/sendMail"
	tests := []struct {
		name   string
		path   string
		body   any
		header []string
		want   int
		code   string
	}{
		{"json message", sender, mailBody("alice@contoso.com"), nil, 202, ""},
		{"MIME", sender, []byte(base64.StdEncoding.EncodeToString([]byte("Subject: hi\r\n\r\nbody"))), []string{"Content-Type", "text/plain"}, 202, ""},
		{"bad MIME", sender, []byte("%%%"), []string{"Content-Type", "text/plain"}, 400, "ErrorMimeContentInvalidBase64String"},
		{"no recipients", sender, mailBody(), nil, 400, "ErrorInvalidRecipients"},
		{"bad recipient", sender, mailBody("not-an-address"), nil, 400, "ErrorInvalidRecipients"},
		{"header without x-", sender, func() any {
			b := mailBody("a@b.c")
			b["message"].(map[string]any)["internetMessageHeaders"] = []any{map[string]any{"name": "Subject", "value": "x"}}
			return b
		}(), nil, 400, "InvalidInternetMessageHeader"},
		{"no message", sender, map[string]any{"saveToSentItems": true}, nil, 400, "ErrorInvalidRequest"},
		{"unknown mailbox", "/v1.0/users/ghost@contoso.com/sendMail", mailBody("a@b.c"), nil, 404, "ErrorInvalidUser"},
		{"user without mailbox", "/v1.0/users/" + synced.ID + "/sendMail", mailBody("a@b.c"), nil, 404, "MailboxNotEnabledForRESTAPI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", tt.path, tt.body, tt.header...)
			if tt.code != "" {
				wantError(t, r, tt.want, tt.code)
			} else {
				wantStatus(t, r, tt.want)
			}
		})
	}
	sent := e.srv.SentMail()
	if len(sent) != 2 {
		t.Fatalf("%d mails recorded, want 2", len(sent))
	}
	m := sent[0]
	if m.From != cloud.UserPrincipalName || !slices.Equal(m.To, []string{"alice@contoso.com"}) || m.ContentType != "HTML" ||
		m.Body != "<p>Change it</p>" || m.Headers["x-pwsync-id"] != "n-1" || m.SaveToSentItems || m.Subject == "" {
		t.Fatalf("mail %+v", m)
	}
	if string(sent[1].MIME) != "Subject: hi\r\n\r\nbody" {
		t.Fatalf("MIME %q", sent[1].MIME)
	}
}

func TestMessagingLimits(t *testing.T) {
	e := newEnv(t, Options{MailPerMinute: 2, ActivityPerSecond: 2})
	cloud, _ := seedUsers(e.srv)
	e.srv.PutUser(User{UserPrincipalName: "other@contoso.com", Mail: "other@contoso.com"})
	for i, want := range []int{202, 202, 429} {
		r := e.do("POST", "/v1.0/users/"+cloud.ID+"/sendMail", mailBody("a@b.c"))
		wantStatus(t, r, want)
		if want == 429 && (r.header.Get("Retry-After") == "" || r.errorCode() != "ApplicationThrottled") {
			t.Fatalf("mail %d: %v %s", i, r.header, r.raw)
		}
	}
	// The limit is per mailbox.
	wantStatus(t, e.do("POST", "/v1.0/users/other@contoso.com/sendMail", mailBody("a@b.c")), 202)

	for _, want := range []int{204, 204, 429} {
		wantStatus(t, e.do("POST", "/v1.0/users/"+cloud.ID+"/teamwork/sendActivityNotification", activityBody()), want)
	}
	if st := e.srv.Stats(); st.MailThrottled != 1 || st.ActivityThrottled != 1 || st.Writes != 0 {
		t.Fatalf("stats %+v: limit refusals counted, and notifications are not directory writes", st)
	}
}

func activityBody() map[string]any {
	return map[string]any{
		"topic":              map[string]any{"source": "text", "value": "Password expiry", "webUrl": "https://myaccount.microsoft.com/"},
		"activityType":       "systemDefault",
		"previewText":        map[string]any{"content": "Your password expires in 3 days"},
		"templateParameters": []any{map[string]any{"name": "systemDefaultText", "value": "Change your password"}},
		"chainId":            42,
	}
}

func TestSendActivityNotification(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	e.srv.SetTeamsAppInstalled(synced.ID, false)
	path := func(u string) string { return "/v1.0/users/" + u + "/teamwork/sendActivityNotification" }
	with := func(mut func(map[string]any)) map[string]any { b := activityBody(); mut(b); return b }
	tests := []struct {
		name string
		path string
		body map[string]any
		want int
	}{
		{"ok", path(cloud.UserPrincipalName), activityBody(), 204},
		{"text topic without webUrl", path(cloud.ID), with(func(b map[string]any) { delete(b["topic"].(map[string]any), "webUrl") }), 400},
		{"bad topic source", path(cloud.ID), with(func(b map[string]any) { b["topic"].(map[string]any)["source"] = "url" }), 400},
		{"no previewText", path(cloud.ID), with(func(b map[string]any) { delete(b, "previewText") }), 400},
		{"systemDefault without its text", path(cloud.ID), with(func(b map[string]any) { delete(b, "templateParameters") }), 400},
		{"unknown property", path(cloud.ID), with(func(b map[string]any) { b["recipient"] = "x" }), 400},
		{"unknown user", path("ghost@contoso.com"), activityBody(), 404},
		{"app not installed", path(synced.ID), activityBody(), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("POST", tt.path, tt.body), tt.want)
		})
	}
	got := e.srv.ActivityNotifications()
	if len(got) != 1 {
		t.Fatalf("%d recorded, want 1", len(got))
	}
	if n := got[0]; n.UserID != cloud.ID || n.ActivityType != "systemDefault" || n.ChainID != 42 ||
		n.TemplateParameters["systemDefaultText"] != "Change your password" || n.PreviewText == "" || n.TopicWebURL == "" {
		t.Fatalf("notification %+v", n)
	}
	e.srv.SetTeamsAppInstalled(synced.ID, true)
	wantStatus(t, e.do("POST", path(synced.ID), activityBody()), 204)
}

func TestMessagingLimitsScaledWindow(t *testing.T) {
	e := newEnv(t, Options{MailPerMinute: 2, MailWindow: 300 * time.Millisecond})
	cloud, _ := seedUsers(e.srv)
	send := func() int { return e.do("POST", "/v1.0/users/"+cloud.ID+"/sendMail", mailBody("a@b.c")).status }
	for i, want := range []int{202, 202, 429} {
		if got := send(); got != want {
			t.Fatalf("mail %d: status %d, want %d", i, got, want)
		}
	}
	time.Sleep(350 * time.Millisecond) // the scaled window has passed
	if got := send(); got != 202 {
		t.Fatalf("after the scaled window: status %d, want 202", got)
	}
}

// TestMailboxConcurrency: Outlook's 4 concurrent requests per mailbox. A
// fifth sendMail while four are being accepted gets ApplicationThrottled
// with Retry-After; other mailboxes are not affected; the places free when
// the answers go.
func TestMailboxConcurrency(t *testing.T) {
	e := newEnv(t, Options{MailLatency: 300 * time.Millisecond})
	cloud, _ := seedUsers(e.srv)
	e.srv.PutUser(User{UserPrincipalName: "other@contoso.com", Mail: "other@contoso.com"})
	body, _ := json.Marshal(mailBody("a@b.c"))
	send := func(box string) (int, http.Header, string) {
		req, _ := http.NewRequest("POST", e.srv.URL()+"/v1.0/users/"+box+"/sendMail", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+e.token)
		res, err := e.hc.Do(req)
		if err != nil {
			return 0, nil, err.Error()
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, string(raw)
	}
	type answer struct {
		status int
		header http.Header
		body   string
	}
	answers := make(chan answer, 4)
	for range 4 {
		go func() { s, h, b := send(cloud.ID); answers <- answer{s, h, b} }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().MaxMailInFlight < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("4 sends never in flight together: %+v", e.srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, h, raw := send(cloud.UserPrincipalName) // the same mailbox by UPN
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" ||
		!strings.Contains(raw, `"ApplicationThrottled"`) || !strings.Contains(raw, "MailboxConcurrency") {
		t.Fatalf("5th concurrent send: %d %v %s", status, h, raw)
	}
	if status, _, raw := send("other@contoso.com"); status != http.StatusAccepted {
		t.Fatalf("another mailbox: %d %s", status, raw)
	}
	for range 4 {
		if a := <-answers; a.status != http.StatusAccepted {
			t.Fatalf("one of the 4: %d %s", a.status, a.body)
		}
	}
	if status, _, raw := send(cloud.ID); status != http.StatusAccepted {
		t.Fatalf("after the 4 were answered: %d %s", status, raw)
	}
	st := e.srv.Stats()
	if st.MailThrottled != 1 || st.MailConcurrencyThrottled != 1 || st.MaxMailInFlight != 4 || len(e.srv.SentMail()) != 6 {
		t.Fatalf("stats %+v, %d mails", st, len(e.srv.SentMail()))
	}
}

// TestMailRecipientsPerDay: the rolling day counts recipients, not
// messages; a refused message spends neither limit.
func TestMailRecipientsPerDay(t *testing.T) {
	e := newEnv(t, Options{MailRecipientsPerDay: 3, MailDayWindow: 400 * time.Millisecond, MailPerMinute: -1})
	cloud, _ := seedUsers(e.srv)
	path := "/v1.0/users/" + cloud.ID + "/sendMail"
	wantStatus(t, e.do("POST", path, mailBody("a@b.c", "b@b.c")), 202)
	r := e.do("POST", path, mailBody("c@b.c", "d@b.c"))
	wantStatus(t, r, 429)
	if r.errorCode() != "ErrorSubmissionQuotaExceeded" || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the day: %v %s", r.header, r.raw)
	}
	wantStatus(t, e.do("POST", path, mailBody("c@b.c")), 202) // the third recipient fits
	wantStatus(t, e.do("POST", path, mailBody("d@b.c")), 429)
	time.Sleep(450 * time.Millisecond)
	wantStatus(t, e.do("POST", path, mailBody("d@b.c", "e@b.c", "f@b.c")), 202)
	if st := e.srv.Stats(); st.MailThrottled != 2 || st.MailDayThrottled != 2 {
		t.Fatalf("stats %+v", st)
	}
}
