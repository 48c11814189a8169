package config

import (
	"strings"
	"testing"
	"time"
)

const notifyValid = `
notify:
  enabled: true
  senders: [noreply1@contoso.com, noreply2@contoso.com]
  teams: {enabled: true}
  workflows_webhook_url: env:WF_URL
  default_language: en
  default_time_zone: Europe/Paris
  time_zones: {"ann@contoso.com": America/New_York, "@contoso.de": Europe/Berlin}
  quiet_hours: {start: "20:00", end: "08:00"}
  pacing: {mail_per_window: 30, mail_window: 2s}
`

func TestNotifyValid(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "lit") + notifyValid
	cfg, err := Parse([]byte(base), env(map[string]string{"AD_PW": "pw", "WF_URL": "https://prod.westeurope.logic.azure.com/workflows/1?sig=abc"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(AllTargets); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	n := cfg.Notify
	if !n.Active() || n.Pacing.MailWindow != 2*time.Second || n.Pacing.TeamsPerWindow != 5 || n.Concurrency != 8 ||
		n.WorkflowsWebhookURL.Value() == "" || strings.Contains(n.WorkflowsWebhookURL.String(), "sig=") {
		t.Fatalf("notify %+v", n)
	}
	if !cfg.hasLiteralSecret() {
		t.Fatalf("the graph secret is literal in this file")
	}
}

func TestNotifyErrorsNameTheKey(t *testing.T) {
	base := strings.ReplaceAll(valid, "file:SECRETFILE", "lit")
	e := map[string]string{"AD_PW": "pw", "WF_URL": "https://x.logic.azure.com/w?sig=s3cr3t"}
	tests := []struct{ name, yaml, want string }{
		{"no_senders", "notify: {enabled: true}", "notify.senders: at least one"},
		{"bad_sender", "notify: {enabled: true, senders: [not-an address@]}", "notify.senders[0]: not a mailbox"},
		{"duplicate_sender", "notify: {enabled: true, senders: [a@b.c, A@b.c]}", "notify.senders[1]: duplicate"},
		{"unknown_key", "notify: {enabled: true, senders: [a@b.c], sendrs: []}", "notify.sendrs: unknown key"},
		{"unknown_pacing_key", "notify: {pacing: {mail_per_minute: 3}}", "notify.pacing.mail_per_minute: unknown key"},
		{"bad_tz", "notify: {enabled: true, senders: [a@b.c], default_time_zone: Mars/Olympus}", "notify.default_time_zone: unknown IANA"},
		{"bad_user_tz", "notify: {enabled: true, senders: [a@b.c], time_zones: {'@c.de': Berlin}}", "notify.time_zones.@c.de: unknown IANA"},
		{"tz_key_not_upn", "notify: {enabled: true, senders: [a@b.c], time_zones: {ann: UTC}}", "notify.time_zones.ann: key must be"},
		{"quiet_half", "notify: {enabled: true, senders: [a@b.c], quiet_hours: {start: '20:00'}}", "notify.quiet_hours: set both"},
		{"quiet_bad_clock", "notify: {enabled: true, senders: [a@b.c], quiet_hours: {start: '25:00', end: '07:00'}}", "notify.quiet_hours.start: must be HH:MM"},
		{"quiet_equal", "notify: {enabled: true, senders: [a@b.c], quiet_hours: {start: '07:00', end: '07:00'}}", "notify.quiet_hours.end: must differ"},
		{"bad_language", "notify: {enabled: true, senders: [a@b.c], default_language: 'english!'}", "notify.default_language"},
		{"missing_templates_dir", "notify: {enabled: true, senders: [a@b.c], templates_dir: /nonexistent/tpl}", "notify.templates_dir"},
		{"teams_http_link", "notify: {enabled: true, senders: [a@b.c], teams: {enabled: true, web_url: 'http://x'}}", "notify.teams.web_url"},
		{"webhook_http", "notify: {workflows_webhook_url: 'http://x.example/w?sig=s3cr3t'}", "notify.workflows_webhook_url: must be an https"},
		{"webhook_env_unset", "notify: {workflows_webhook_url: 'env:NOPE'}", "notify.workflows_webhook_url: environment variable NOPE"},
		{"pacing_zero", "notify: {enabled: true, senders: [a@b.c], pacing: {mail_per_window: 0}}", "notify.pacing.mail_per_window"},
		{"concurrency", "notify: {enabled: true, senders: [a@b.c], concurrency: 0}", "notify.concurrency"},
		{"dead_letters_per_window", "notify: {workflows_webhook_url: 'env:WF_URL', dead_letters: {per_window: 0}}", "notify.dead_letters.per_window"},
		{"dead_letters_window", "notify: {workflows_webhook_url: 'env:WF_URL', dead_letters: {window: 10ms}}", "notify.dead_letters.window"},
		{"dead_letters_unknown_key", "notify: {dead_letters: {per_minute: 3}}", "notify.dead_letters.per_minute: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base+tt.yaml+"\n"), env(e))
			if err == nil {
				err = cfg.Validate(AllTargets)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error leaks the webhook URL: %v", err)
			}
		})
	}
}

func TestParseClock(t *testing.T) {
	for in, want := range map[string]int{"00:00": 0, "08:30": 510, "23:59": 1439} {
		if got, err := ParseClock(in); err != nil || got != want {
			t.Errorf("ParseClock(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"24:00", "8:30", "08:60", "", "0830"} {
		if _, err := ParseClock(in); err == nil {
			t.Errorf("ParseClock(%q): no error", in)
		}
	}
}
