package msgraph_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

func TestMessengerAgainstSimulator(t *testing.T) {
	s := startSim(t, graphsim.Options{MailPerMinute: 1, ActivityPerSecond: 1, ActivityWindow: time.Minute})
	s.PutUser(graphsim.User{ID: "m-sender", UserPrincipalName: "noreply@contoso.com", Mail: "noreply@contoso.com", AccountEnabled: true})
	s.PutUser(graphsim.User{ID: "m-user", UserPrincipalName: "ann@contoso.com", Mail: "ann@contoso.com", AccountEnabled: true})
	s.PutUser(graphsim.User{ID: "m-noapp", UserPrincipalName: "bob@contoso.com", Mail: "bob@contoso.com", AccountEnabled: true})
	s.SetTeamsAppInstalled("m-noapp", false)
	c := newClient(t, s, nil)

	mail := graph.Mail{To: []string{"ann@contoso.com"}, Subject: "Your password expires in 7 days",
		Text: "plain", HTML: "<p>html</p>", Headers: map[string]string{"x-pwsync-notice": "n1"}}
	if err := c.SendMail(ctx(t), "noreply@contoso.com", mail); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	sent := s.SentMail()
	if len(sent) != 1 {
		t.Fatalf("%d mails, want 1", len(sent))
	}
	if m := sent[0]; m.From != "noreply@contoso.com" || !slices.Equal(m.To, mail.To) || m.ContentType != "HTML" ||
		m.Body != "<p>html</p>" || m.Subject != mail.Subject || m.Headers["x-pwsync-notice"] != "n1" || m.SaveToSentItems {
		t.Fatalf("mail %+v", m)
	}

	// Over the mailbox limit: a *graph.Error with status 429 and Retry-After.
	err := c.SendMail(ctx(t), "noreply@contoso.com", mail)
	if ge := asGraphError(t, err); ge.Status != http.StatusTooManyRequests || ge.RetryAfter <= 0 || !ge.Retryable() {
		t.Fatalf("second mail: %+v", ge)
	}

	act := graph.Activity{TopicText: "Password", TopicWebURL: "https://myaccount.microsoft.com/", ActivityType: "systemDefault",
		PreviewText: "expires soon", TemplateParameters: map[string]string{"systemDefaultText": "Change it"}}
	if err := c.SendActivityNotification(ctx(t), "m-user", act); err != nil {
		t.Fatalf("SendActivityNotification: %v", err)
	}
	got := s.ActivityNotifications()
	if len(got) != 1 || got[0].UserID != "m-user" || got[0].TemplateParameters["systemDefaultText"] != "Change it" || got[0].TopicWebURL == "" {
		t.Fatalf("activities %+v", got)
	}
	// Not installed for the user: 403, whatever the rate.
	if ge := asGraphError(t, c.SendActivityNotification(ctx(t), "m-noapp", act)); ge.Status != http.StatusForbidden {
		t.Fatalf("no app: %+v", ge)
	}
	if ge := asGraphError(t, c.SendActivityNotification(ctx(t), "m-user", act)); ge.Status != http.StatusTooManyRequests || ge.RetryAfter <= 0 {
		t.Fatalf("over the Teams limit: %+v", ge)
	}
}

func asGraphError(t *testing.T, err error) *graph.Error {
	t.Helper()
	ge, ok := err.(*graph.Error)
	if !ok {
		t.Fatalf("error %T %v, want *graph.Error", err, err)
	}
	return ge
}
