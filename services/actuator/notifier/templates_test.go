package notifier

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("golden %s: %v (run go test -update)", p, err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	tpl, err := LoadTemplates("", "en")
	if err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	tests := []struct {
		name     string
		notice   string
		prefs    []string
		lead     int
		helpdesk string
		wantLang string
	}{
		{"en_warning_7", events.NoticeExpiryWarning, []string{"en-US"}, 7, "the IT helpdesk (ext. 4357)", "en"},
		{"en_warning_1", events.NoticeExpiryWarning, []string{""}, 1, "", "en"},
		{"en_warning_0", events.NoticeExpiryWarning, nil, 0, "", "en"},
		{"en_expired_3", events.NoticeExpired, []string{"de-DE"}, -3, "", "en"}, // no German: default
		{"en_reset", events.NoticePasswordReset, []string{"en"}, 0, "the IT helpdesk (ext. 4357)", "en"},
		{"fr_warning_7", events.NoticeExpiryWarning, []string{"fr-FR"}, 7, "le support (poste 4357)", "fr"},
		{"fr_expired_1", events.NoticeExpired, []string{"", "fr-CA"}, -1, "", "fr"}, // cloud preferredLanguage
		{"fr_reset", events.NoticePasswordReset, []string{"FR"}, 0, "", "fr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := sampleData(tt.lead, paris)
			d.Template, d.Helpdesk = tt.notice, tt.helpdesk
			m, err := tpl.Render(tt.notice, tt.prefs, d)
			if err != nil {
				t.Fatal(err)
			}
			if m.Language != tt.wantLang {
				t.Fatalf("language %q, want %q", m.Language, tt.wantLang)
			}
			if strings.Contains(m.Subject, "\n") || m.Subject == "" || m.Teams == "" || len([]rune(m.Teams)) > 150 {
				t.Fatalf("subject %q / teams %q", m.Subject, m.Teams)
			}
			golden(t, tt.name+".txt", "Subject: "+m.Subject+"\nTeams: "+m.Teams+"\n\n"+m.Text)
			golden(t, tt.name+".html", m.HTML)
		})
	}
}

func TestResetNoticeSaysWhatToDo(t *testing.T) {
	tpl, err := LoadTemplates("", "en")
	if err != nil {
		t.Fatal(err)
	}
	for lang, want := range map[string]string{"en": "Did you not expect this?", "fr": "Vous ne vous y attendiez pas ?"} {
		m, err := tpl.Render(events.NoticePasswordReset, []string{lang}, sampleData(0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range []string{m.Text, m.HTML} {
			if !strings.Contains(body, want) || !strings.Contains(body, "helpdesk") && !strings.Contains(body, "support") {
				t.Fatalf("%s reset notice lacks what to do if unexpected:\n%s", lang, body)
			}
		}
	}
}

func TestHTMLEscapesValues(t *testing.T) {
	tpl, err := LoadTemplates("", "en")
	if err != nil {
		t.Fatal(err)
	}
	d := sampleData(3, time.UTC)
	d.DisplayName = `<script>alert("x")</script>`
	m, err := tpl.Render(events.NoticeExpiryWarning, nil, d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "&lt;script&gt;") {
		t.Fatalf("display name not escaped in HTML:\n%s", m.HTML)
	}
}

// writeTemplates writes files (path -> body) under a temp dir.
func writeTemplates(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, body := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const okTxt = `{{define "subject"}}S {{.DaysLeft}}{{end}}{{define "text"}}T {{.UPN}}{{end}}{{define "teams"}}M{{end}}`

func TestTemplatesDirOverrides(t *testing.T) {
	dir := writeTemplates(t, map[string]string{
		"en/expired.txt":  `{{define "subject"}}Custom expired{{end}}{{define "text"}}Custom {{.UPN}}{{end}}{{define "teams"}}C{{end}}`,
		"de/expired.txt":  `{{define "subject"}}Ihr Kennwort ist abgelaufen{{end}}{{define "text"}}Hallo {{.DisplayName}}{{end}}{{define "teams"}}Abgelaufen{{end}}`,
		"de/expired.html": `<p>Hallo {{.DisplayName}}</p>`,
		"README.md":       "ignored",
	})
	tpl, err := LoadTemplates(dir, "en")
	if err != nil {
		t.Fatal(err)
	}
	m, err := tpl.Render(events.NoticeExpired, nil, sampleData(-1, time.UTC))
	if err != nil || m.Subject != "Custom expired" || !strings.Contains(m.HTML, "expired on") {
		t.Fatalf("override of en/expired.txt only: %+v %v", m, err)
	}
	m, err = tpl.Render(events.NoticeExpired, []string{"de-AT"}, sampleData(-1, time.UTC))
	if err != nil || m.Language != "de" || m.Subject != "Ihr Kennwort ist abgelaufen" {
		t.Fatalf("added language: %+v %v", m, err)
	}
	// German has no warning template: English it is.
	m, err = tpl.Render(events.NoticeExpiryWarning, []string{"de"}, sampleData(3, time.UTC))
	if err != nil || m.Language != "en" {
		t.Fatalf("fallback to default: %+v %v", m, err)
	}
}

func TestTemplatesRefused(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		def   string
		want  []string // all in the error
	}{
		{"unknown_field", map[string]string{"en/expired.txt": strings.Replace(okTxt, ".UPN", ".Upn", 1)}, "en",
			[]string{"en/expired.txt", "unknown field .Upn"}},
		{"unknown_field_in_untaken_branch", map[string]string{"en/expired.html": `{{if eq .DaysLeft 999}}{{.Password}}{{end}}`}, "en",
			[]string{"en/expired.html", "unknown field .Password"}},
		{"unknown_root_field", map[string]string{"en/expired.html": `{{$.Secret}}`}, "en",
			[]string{"en/expired.html", "$.Secret"}},
		{"missing_block", map[string]string{"en/expired.txt": `{{define "subject"}}x{{end}}{{define "text"}}y{{end}}`}, "en",
			[]string{"en/expired.txt", `no {{define "teams"}} block`}},
		{"parse_error", map[string]string{"fr/expired.txt": `{{define "subject"}}{{.UPN{{end}}`}, "en",
			[]string{"fr/expired.txt"}},
		{"unknown_notice", map[string]string{"en/expiry_warnign.txt": okTxt}, "en",
			[]string{"en/expiry_warnign.txt", "unknown notice"}},
		{"html_without_txt", map[string]string{"de/expired.html": `<p>{{.UPN}}</p>`}, "en",
			[]string{"de/expired", "needs both"}},
		{"unsupported_function", map[string]string{"en/expired.txt": strings.Replace(okTxt, "{{.DaysLeft}}", "{{index .UPN 99}}", 1)}, "en",
			[]string{"en/expired", `unknown function "index"`}},
		{"unsupported_range", map[string]string{"en/expired.html": `{{range .UPN}}x{{end}}`}, "en",
			[]string{"en/expired.html", "{{range}} is not supported"}},
		// Found only by executing against the sample data: a string compared with a number.
		{"exec_error", map[string]string{"en/expired.txt": strings.Replace(okTxt, "{{.DaysLeft}}", "{{if eq .UPN 1}}x{{end}}", 1)}, "en",
			[]string{"en/expired", "incompatible types for comparison"}},
		{"no_default_language", nil, "es", []string{`default language "es" has no templates`}},
		{"nested_dir", map[string]string{"en/x/expired.txt": okTxt}, "en", []string{"en/x/expired.txt", "must be <language>/<notice>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeTemplates(t, tt.files)
			_, err := LoadTemplates(dir, tt.def)
			if err == nil {
				t.Fatalf("loaded; want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
