package notifier

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/actuator/notifier/tmpl"
	"github.com/pwsync/pwsync/shared/events"
)

// Built-in templates: templates/<language>/<notice>.txt holds the
// "subject", "text" and "teams" blocks; <notice>.html is the HTML body,
// whose values are escaped. The language is package tmpl's: text/template's
// syntax without its reflection (which would keep every method of the
// Graph SDK in the binary).
//
//go:embed templates
var builtin embed.FS

// Notices the evaluator may ask for; every language must provide all of
// them or fall back to the default language's.
var noticeNames = []string{events.NoticeExpiryWarning, events.NoticeExpired, events.NoticePasswordReset}

// Data is what a template may use. A template naming anything else is
// refused when templates are loaded.
type Data struct {
	DisplayName       string // or the UPN when unknown
	UPN               string
	Template          string
	LeadDays          int    // days before expiry (negative after it)
	DaysLeft          int    // max(LeadDays, 0)
	DaysAgo           int    // max(-LeadDays, 0)
	Expiry            string // date and time in the user's time zone
	ExpiryDate        string // date only
	PasswordSetAt     string // when the password was set (reset), user's time zone
	ChangePasswordURL string
	Helpdesk          string
	TimeZone          string
}

func (d Data) fields() map[string]any {
	return map[string]any{
		"DisplayName": d.DisplayName, "UPN": d.UPN, "Template": d.Template, "LeadDays": d.LeadDays,
		"DaysLeft": d.DaysLeft, "DaysAgo": d.DaysAgo, "Expiry": d.Expiry, "ExpiryDate": d.ExpiryDate,
		"PasswordSetAt": d.PasswordSetAt, "ChangePasswordURL": d.ChangePasswordURL, "Helpdesk": d.Helpdesk,
		"TimeZone": d.TimeZone,
	}
}

// Message is a rendered notice.
type Message struct {
	Language string
	Subject  string
	Text     string
	HTML     string
	Teams    string // short text for the Teams activity feed (150 characters shown)
}

type notice struct {
	text *tmpl.Template // blocks subject, text, teams
	html *tmpl.Template
	from string // file names, for errors
}

// Templates are the loaded, checked templates per language and notice.
type Templates struct {
	def   string
	langs map[string]map[string]*notice // lower-case language -> notice -> templates
}

// LoadTemplates reads the built-in templates, then those in dir (may be
// empty), which replace built-in files of the same name and may add
// languages. Every template is checked: it must parse, name only fields
// of Data (in every branch), and execute against sample data; the error
// names the offending file.
func LoadTemplates(dir, defaultLanguage string) (*Templates, error) {
	files := map[string]source{} // "en/expired.txt" -> source
	if err := collect(builtin, "templates", "built-in ", files); err != nil {
		return nil, err
	}
	if dir != "" {
		if err := collect(os.DirFS(dir), ".", dir+"/", files); err != nil {
			return nil, err
		}
	}
	t := &Templates{def: strings.ToLower(defaultLanguage), langs: map[string]map[string]*notice{}}
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		lang, file := path.Split(k)
		lang = strings.ToLower(strings.TrimSuffix(lang, "/"))
		name, ext := strings.TrimSuffix(file, path.Ext(file)), path.Ext(file)
		if !slices.Contains(noticeNames, name) {
			errs = append(errs, fmt.Errorf("template %s: unknown notice %q (want one of %s)", files[k].name, name, strings.Join(noticeNames, ", ")))
			continue
		}
		if t.langs[lang] == nil {
			t.langs[lang] = map[string]*notice{}
		}
		n := t.langs[lang][name]
		if n == nil {
			n = &notice{}
			t.langs[lang][name] = n
		}
		if err := n.add(ext, files[k]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for lang, notices := range t.langs {
		for name, n := range notices {
			if err := n.check(); err != nil {
				errs = append(errs, fmt.Errorf("templates %s/%s: %w", lang, name, err))
			}
		}
	}
	if def := t.langs[t.def]; def == nil {
		errs = append(errs, fmt.Errorf("default language %q has no templates", defaultLanguage))
	} else {
		for _, name := range noticeNames {
			if def[name] == nil {
				errs = append(errs, fmt.Errorf("default language %q has no %q template", defaultLanguage, name))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

type source struct {
	name string // for errors: "built-in en/expired.txt", "/etc/pwsync/templates/en/expired.txt"
	body string
}

// collect reads <lang>/<notice>.txt|.html under root of fsys.
func collect(fsys fs.FS, root, label string, into map[string]source) error {
	return fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading templates %s: %w", label, err)
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if ext := path.Ext(rel); ext != ".txt" && ext != ".html" {
			return nil // README and the like
		}
		if strings.Count(rel, "/") != 1 {
			return fmt.Errorf("template %s%s: must be <language>/<notice>.txt or .html", label, rel)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("reading template %s%s: %w", label, rel, err)
		}
		into[rel] = source{name: label + rel, body: string(b)}
		return nil
	})
}

func (n *notice) add(ext string, src source) error {
	n.from = strings.TrimSpace(n.from + " " + src.name)
	switch ext {
	case ".txt":
		t, err := tmpl.Parse(src.name, src.body, tmpl.Options{Fields: dataFields})
		if err != nil {
			return fmt.Errorf("template %s: %w", src.name, err)
		}
		for _, block := range []string{"subject", "text", "teams"} {
			if !t.Has(block) {
				return fmt.Errorf("template %s: no {{define %q}} block", src.name, block)
			}
		}
		n.text = t
	case ".html":
		t, err := tmpl.Parse(src.name, src.body, tmpl.Options{HTML: true, Fields: dataFields})
		if err != nil {
			return fmt.Errorf("template %s: %w", src.name, err)
		}
		n.html = t
	}
	return nil
}

// check needs both files and executes them against sample data covering
// the branches templates typically take (days left, today, expired).
func (n *notice) check() error {
	if n.text == nil || n.html == nil {
		return fmt.Errorf("needs both a .txt and an .html file (have: %s)", n.from)
	}
	loc := time.UTC
	for _, lead := range []int{14, 1, 0, -1, -3} {
		d := sampleData(lead, loc)
		d.Helpdesk = "" // both sides of {{if .Helpdesk}}
		if _, err := n.render("check", d); err != nil {
			return err
		}
		d.Helpdesk = "the IT helpdesk"
		if _, err := n.render("check", d); err != nil {
			return err
		}
	}
	return nil
}

func sampleData(lead int, loc *time.Location) Data {
	exp := time.Date(2030, 1, 15, 9, 30, 0, 0, loc)
	return Data{DisplayName: "Ann Example", UPN: "ann@example.com", Template: events.NoticeExpiryWarning, LeadDays: lead,
		DaysLeft: max(lead, 0), DaysAgo: max(-lead, 0), Expiry: exp.Format(dateTimeLayout), ExpiryDate: exp.Format(dateLayout),
		PasswordSetAt: exp.Format(dateTimeLayout), ChangePasswordURL: "https://example.com/change", TimeZone: loc.String()}
}

const (
	dateLayout     = "2006-01-02"
	dateTimeLayout = "2006-01-02 15:04 MST"
)

func (n *notice) render(lang string, d Data) (Message, error) {
	m := Message{Language: lang}
	fields := d.fields()
	var err error
	if m.Subject, err = n.text.ExecuteBlock("subject", fields); err != nil {
		return m, err
	}
	if m.Text, err = n.text.ExecuteBlock("text", fields); err != nil {
		return m, err
	}
	if m.Teams, err = n.text.ExecuteBlock("teams", fields); err != nil {
		return m, err
	}
	if m.HTML, err = n.html.Execute(fields); err != nil {
		return m, err
	}
	m.Subject = strings.Join(strings.Fields(m.Subject), " ") // a subject is one line
	m.Teams = strings.Join(strings.Fields(m.Teams), " ")
	m.Text = strings.TrimSpace(m.Text) + "\n"
	return m, nil
}

// Render renders notice name in the first language of prefs that has it
// (exact tag, then its base language: fr-CA -> fr), else the default.
func (t *Templates) Render(name string, prefs []string, d Data) (Message, error) {
	lang, n := t.pick(name, prefs)
	if n == nil {
		return Message{}, fmt.Errorf("no template for notice %q", name)
	}
	m, err := n.render(lang, d)
	if err != nil {
		return Message{}, fmt.Errorf("rendering %s/%s: %w", lang, name, err)
	}
	return m, nil
}

func (t *Templates) pick(name string, prefs []string) (string, *notice) {
	for _, p := range prefs {
		p = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(p, "_", "-")))
		if p == "" {
			continue
		}
		if n := t.langs[p][name]; n != nil {
			return p, n
		}
		if base, _, ok := strings.Cut(p, "-"); ok {
			if n := t.langs[base][name]; n != nil {
				return base, n
			}
		}
	}
	return t.def, t.langs[t.def][name]
}

// Languages lists the loaded languages.
func (t *Templates) Languages() []string {
	out := make([]string, 0, len(t.langs))
	for l := range t.langs {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

var dataFields = func() map[string]bool {
	m := map[string]bool{}
	for k := range (Data{}).fields() {
		m[k] = true
	}
	return m
}()
