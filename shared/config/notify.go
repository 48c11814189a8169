package config

import (
	"fmt"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // time zones validate and work without the host's zoneinfo
)

// Notify configures user notices (email, Teams) and admin alerts (a Teams
// Workflows webhook). The notifier runs when Enabled (user notices) or when
// a webhook URL is set (alerts only).
type Notify struct {
	Enabled bool `yaml:"enabled"`
	// Senders are the mailboxes (UPN or object id) notices are sent from;
	// Exchange Online allows each 30 messages a minute, so the notifier
	// spreads the load over all of them. Mail.Send must be scoped to them by
	// an application access policy.
	Senders         []string `yaml:"senders"`
	SaveToSentItems bool     `yaml:"save_to_sent_items"`
	Teams           Teams    `yaml:"teams"`
	// WorkflowsWebhookURL is the Teams Workflows "post to a channel when a
	// webhook request is received" URL for admin alerts. It carries a sig=
	// secret, hence a Secret.
	WorkflowsWebhookURL Secret           `yaml:"workflows_webhook_url"`
	DeadLetters         DeadLetterAlerts `yaml:"dead_letters"`
	// TemplatesDir overrides the built-in templates: DIR/<language>/<template>.txt
	// and .html; new languages may be added the same way.
	TemplatesDir    string `yaml:"templates_dir"`
	DefaultLanguage string `yaml:"default_language"`
	// DefaultTimeZone (IANA name) is where quiet hours and dates are
	// computed unless TimeZones names the user ("ann@contoso.com") or their
	// domain ("@contoso.com").
	DefaultTimeZone string            `yaml:"default_time_zone"`
	TimeZones       map[string]string `yaml:"time_zones"`
	QuietHours      QuietHours        `yaml:"quiet_hours"`
	// ChangePasswordURL and Helpdesk are given to the templates.
	ChangePasswordURL string `yaml:"change_password_url"`
	Helpdesk          string `yaml:"helpdesk"`
	Concurrency       int    `yaml:"concurrency"`
	// MaxAttempts: failed sends of one notice before it is dead-lettered.
	MaxAttempts int    `yaml:"max_attempts"`
	Pacing      Pacing `yaml:"pacing"`
}

// Teams configures activity feed notices (sendActivityNotification).
type Teams struct {
	Enabled bool `yaml:"enabled"`
	// AppID is the Teams app's id (teamsAppId), needed only when several
	// apps share the Entra app id.
	AppID string `yaml:"app_id"`
	// ActivityType declared in the app manifest, or systemDefault.
	ActivityType string `yaml:"activity_type"`
	// WebURL is where a click on the notice leads (required by Teams for a
	// text topic); default change_password_url.
	WebURL string `yaml:"web_url"`
}

// QuietHours: notices falling between Start and End (HH:MM, the user's
// local time; End before Start wraps past midnight) wait until End.
// Both empty = no quiet hours.
type QuietHours struct {
	Start string `yaml:"start"`
	End   string `yaml:"end"`
}

// Pacing keeps sends under the service limits. Defaults are the documented
// limits; tests and benchmarks scale the windows.
type Pacing struct {
	MailPerWindow  int           `yaml:"mail_per_window"` // per sender mailbox; Exchange Online: 30 a minute
	MailWindow     time.Duration `yaml:"mail_window"`
	MailPerDay     int           `yaml:"mail_per_day"`     // per sender; Exchange Online: 10,000 recipients a day; 0 = unchecked
	MailDayWindow  time.Duration `yaml:"mail_day_window"`  // the rolling day of mail_per_day; 0 = 24h
	TeamsPerWindow int           `yaml:"teams_per_window"` // per app and tenant; Teams: 5 a second
	TeamsWindow    time.Duration `yaml:"teams_window"`
}

func defaultNotify() Notify {
	return Notify{
		DefaultLanguage:   "en",
		DefaultTimeZone:   "UTC",
		ChangePasswordURL: "https://mysignins.microsoft.com/security-info/password/change",
		Teams:             Teams{ActivityType: "systemDefault"},
		DeadLetters:       defaultDeadLetterAlerts(),
		Concurrency:       8,
		MaxAttempts:       8,
		Pacing: Pacing{MailPerWindow: 30, MailWindow: time.Minute, MailPerDay: 10000, MailDayWindow: 24 * time.Hour,
			TeamsPerWindow: 5, TeamsWindow: time.Second},
	}
}

// Active reports whether the notifier runs at all.
func (n Notify) Active() bool { return n.Enabled || n.WorkflowsWebhookURL.IsSet() }

var (
	clockRe    = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
	languageRe = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
)

// ParseClock parses HH:MM into minutes after midnight.
func ParseClock(s string) (int, error) {
	if !clockRe.MatchString(s) {
		return 0, fmt.Errorf("must be HH:MM, 00:00 to 23:59 (got %q)", s)
	}
	var h, m int
	_, _ = fmt.Sscanf(s, "%d:%d", &h, &m)
	return h*60 + m, nil
}

func (n Notify) validate() []error {
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("notify.%s: "+format, append([]any{key}, a...)...))
	}
	if n.WorkflowsWebhookURL.IsSet() {
		if err := httpsURL(n.WorkflowsWebhookURL.Value()); err != nil && n.WorkflowsWebhookURL.Value() != "" {
			// The URL is a secret: say what is wrong without echoing it.
			add("workflows_webhook_url", "must be an https:// URL")
		}
	}
	if !n.Active() {
		return errs
	}
	if n.Enabled && len(n.Senders) == 0 {
		add("senders", "at least one sender mailbox is required (email is also the fallback for Teams)")
	}
	seen := map[string]bool{}
	for i, s := range n.Senders {
		key := fmt.Sprintf("senders[%d]", i)
		switch {
		case strings.TrimSpace(s) == "":
			add(key, "must not be empty")
		case strings.Contains(s, "@"):
			if _, err := mail.ParseAddress(s); err != nil {
				add(key, "not a mailbox address (got %q)", s)
			}
		}
		if seen[strings.ToLower(s)] {
			add(key, "duplicate sender %q", s)
		}
		seen[strings.ToLower(s)] = true
	}
	if n.Teams.Enabled {
		if n.Teams.ActivityType == "" {
			add("teams.activity_type", "required (systemDefault, or a type declared in the app manifest)")
		}
		web := n.Teams.WebURL
		if web == "" {
			web = n.ChangePasswordURL
		}
		if err := httpsURL(web); err != nil {
			add("teams.web_url", "%v (Teams requires a link for a text topic; defaults to notify.change_password_url)", err)
		}
	}
	if n.TemplatesDir != "" {
		if st, err := os.Stat(n.TemplatesDir); err != nil {
			add("templates_dir", "%v", err)
		} else if !st.IsDir() {
			add("templates_dir", "%s is not a directory", n.TemplatesDir)
		}
	}
	if !languageRe.MatchString(n.DefaultLanguage) {
		add("default_language", "must be a language tag such as en or fr-FR (got %q)", n.DefaultLanguage)
	}
	if _, err := time.LoadLocation(n.DefaultTimeZone); err != nil || n.DefaultTimeZone == "" {
		add("default_time_zone", "unknown IANA time zone %q", n.DefaultTimeZone)
	}
	for who, tz := range n.TimeZones {
		if _, err := time.LoadLocation(tz); err != nil || tz == "" {
			add("time_zones."+who, "unknown IANA time zone %q", tz)
		}
		if !strings.Contains(who, "@") {
			add("time_zones."+who, "key must be a UPN (ann@contoso.com) or a domain (@contoso.com)")
		}
	}
	q := n.QuietHours
	switch {
	case q.Start == "" && q.End == "":
	case q.Start == "" || q.End == "":
		add("quiet_hours", "set both start and end, or neither")
	default:
		s, err1 := ParseClock(q.Start)
		if err1 != nil {
			add("quiet_hours.start", "%v", err1)
		}
		e, err2 := ParseClock(q.End)
		if err2 != nil {
			add("quiet_hours.end", "%v", err2)
		}
		if err1 == nil && err2 == nil && s == e {
			add("quiet_hours.end", "must differ from start")
		}
	}
	if n.ChangePasswordURL != "" {
		if err := httpsURL(n.ChangePasswordURL); err != nil {
			add("change_password_url", "%v", err)
		}
	}
	if n.Concurrency < 1 || n.Concurrency > 64 {
		add("concurrency", "must be between 1 and 64 (got %d)", n.Concurrency)
	}
	if n.MaxAttempts < 1 {
		add("max_attempts", "must be at least 1")
	}
	p := n.Pacing
	if p.MailPerWindow < 1 || p.MailWindow <= 0 {
		add("pacing.mail_per_window", "must be at least 1, with a positive pacing.mail_window")
	}
	if p.MailPerDay < 0 {
		add("pacing.mail_per_day", "must not be negative")
	}
	if p.MailDayWindow < 0 {
		add("pacing.mail_day_window", "must not be negative")
	}
	if p.TeamsPerWindow < 1 || p.TeamsWindow <= 0 {
		add("pacing.teams_per_window", "must be at least 1, with a positive pacing.teams_window")
	}
	n.DeadLetters.validate(add)
	return errs
}
