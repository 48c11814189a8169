package tmpl

import (
	"strings"
	"testing"
)

var data = map[string]any{"Name": "Ann", "Empty": "", "N": 3, "Zero": 0, "Neg": -2, "Yes": true, "No": false,
	"HTML": `<b a="x">'&'+`}

func TestExecute(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"text only", "plain {text} } {", "plain {text} } {"},
		{"field", "Hello {{.Name}}!", "Hello Ann!"},
		{"root field", "{{$.Name}}", "Ann"},
		{"int and bool", "{{.N}} {{.Neg}} {{.Yes}}", "3 -2 true"},
		{"spaces in action", "{{  .Name  }}", "Ann"},
		{"if true", "{{if .Name}}y{{end}}", "y"},
		{"if empty string", "{{if .Empty}}y{{else}}n{{end}}", "n"},
		{"if zero", "{{if .Zero}}y{{else}}n{{end}}", "n"},
		{"if false", "{{if .No}}y{{else}}n{{end}}", "n"},
		{"else if", "{{if eq .N 1}}one{{else if eq .N 3}}three{{else}}many{{end}}", "three"},
		{"else if falls through", "{{if eq .N 1}}one{{else if eq .N 2}}two{{else}}many{{end}}!", "many!"},
		{"else if chain", "{{if .No}}a{{else if .Zero}}b{{else if .Yes}}c{{end}}.", "c."},
		{"nested if", "{{if .Yes}}{{if .No}}a{{else}}b{{end}}c{{end}}", "bc"},
		{"eq several", "{{if eq .N 1 2 3}}y{{end}}", "y"},
		{"eq strings", `{{if eq .Name "Ann"}}y{{end}}`, "y"},
		{"ne", "{{if ne .N 3}}y{{else}}n{{end}}", "n"},
		{"lt le gt ge", "{{lt .N 3}} {{le .N 3}} {{gt .N 3}} {{ge .N 3}}", "false true false true"},
		{"lt negative", "{{if lt .Neg 0}}late{{end}}", "late"},
		{"string order", `{{lt "a" "b"}}`, "true"},
		{"not", "{{if not .Empty}}y{{end}}", "y"},
		{"and value", "{{and .Name .N}}", "3"},
		{"and falsy", "{{if and .Name .Empty}}y{{else}}n{{end}}", "n"},
		{"or value", "{{or .Empty .Name}}", "Ann"},
		{"parens", "{{if and (gt .N 0) (not .No)}}y{{end}}", "y"},
		{"nested parens", "{{if not (and (eq .N 3) (eq .Name `Ann`))}}n{{else}}y{{end}}", "y"},
		{"literals", `{{"a\"b"}} {{12}} {{-4}} {{true}}`, `a"b 12 -4 true`},
		{"comment", "a{{/* a comment with }} and \" */}}b", "ab"},
		{"trim both", "a  {{- .Name -}}  \n b", "aAnnb"},
		{"trim comment", "a \n{{- /* c */ -}}\n b", "ab"},
		{"no trim without space", "{{-3}}", "-3"},
		{"define not in root", `x{{define "b"}}B{{end}}y`, "xy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := Parse("t", tt.src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.Execute(data)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBlocks(t *testing.T) {
	tp, err := Parse("t", `{{define "subject"}}S {{.N}}{{end}}
{{define "text"}}{{if .Yes}}T{{end}}{{end}}`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for block, want := range map[string]string{"subject": "S 3", "text": "T"} {
		if got, err := tp.ExecuteBlock(block, data); err != nil || got != want {
			t.Fatalf("%s: %q %v, want %q", block, got, err, want)
		}
	}
	if tp.Has("teams") {
		t.Fatal("has an undefined block")
	}
	if _, err := tp.ExecuteBlock("teams", data); err == nil {
		t.Fatal("executed an undefined block")
	}
}

func TestHTMLEscapes(t *testing.T) {
	tp, err := Parse("t", `<p title="{{.HTML}}">{{.HTML}}</p>`, Options{HTML: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.Execute(data)
	if err != nil {
		t.Fatal(err)
	}
	// As html/template escapes text: the template's own markup stays.
	want := `<p title="&lt;b a=&#34;x&#34;&gt;&#39;&amp;&#39;&#43;">&lt;b a=&#34;x&#34;&gt;&#39;&amp;&#39;&#43;</p>`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	fields := map[string]bool{"Name": true, "N": true}
	tests := []struct {
		name, src, want string
	}{
		{"unknown field", "{{.Nam}}", "t:1: unknown field .Nam (known: N, Name)"},
		{"unknown field in untaken branch", "a\nb\n{{if eq .N 99}}{{.Password}}{{end}}", "t:3: unknown field .Password"},
		{"unknown root field", "{{$.Secret}}", "unknown field $.Secret"},
		{"field of field", "{{.Name.First}}", "fields of fields are not supported"},
		{"variable", "{{$x := .Name}}", "variables are not supported"},
		{"dollar alone", "{{$}}", "variables are not supported"},
		{"dot alone", "{{.}}", "want .Field"},
		{"pipe", "{{.Name | printf `%q`}}", "pipelines (|) are not supported"},
		{"range", "{{range .Name}}x{{end}}", "{{range}} is not supported"},
		{"with", "{{with .Name}}x{{end}}", "{{with}} is not supported"},
		{"template", `{{template "x"}}`, "{{template}} is not supported"},
		{"unknown function", "{{printf .Name}}", `unknown function "printf"`},
		{"function as argument", "{{and not .Name}}", "must be in parentheses"},
		{"arity", "{{eq .N}}", "eq: wrong number of arguments (1)"},
		{"arity lt", "{{lt .N 1 2}}", "lt: wrong number of arguments (3)"},
		{"two values", "{{.N .Name}}", "a function goes first"},
		{"unclosed if", "{{if .N}}x", "unclosed {{if}}"},
		{"unclosed define", `{{define "a"}}x`, `unclosed {{define "a"}}`},
		{"unclosed action", "{{.N", "unclosed action"},
		{"unclosed comment", "{{/* x }}", "unclosed comment"},
		{"unclosed paren", "{{if (eq .N 1}}{{end}}", "unclosed ("},
		{"end alone", "{{end}}", "{{end}} without"},
		{"else alone", "{{else}}", "{{else}} outside"},
		{"else twice", "{{if .N}}{{else}}{{else}}{{end}}", "{{else}} outside"},
		{"else junk", "{{if .N}}{{else .N}}{{end}}", "after else"},
		{"nested define", `{{if .N}}{{define "a"}}{{end}}{{end}}`, "top level"},
		{"define twice", `{{define "a"}}{{end}}{{define "a"}}{{end}}`, `block "a" defined twice`},
		{"define without name", `{{define a}}{{end}}`, `want {{define "name"}}`},
		{"empty action", "{{ }}", "empty action"},
		{"bad string", `{{"a\q"}}`, "bad string"},
		{"unterminated string", `{{"abc}}`, "unterminated string"},
		{"bad number", "{{12ab}}", "bad number"},
		{"odd character", "{{.N + 1}}", `unexpected '+'`},
		{"too deep", "{{" + strings.Repeat("(", 200) + ".N" + strings.Repeat(")", 200) + "}}", "nested too deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t", tt.src, Options{Fields: fields})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestExecuteErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"missing key", "a\n{{.Missing}}", "t:2: no value for .Missing"},
		{"int vs string", `{{if eq .N "3"}}{{end}}`, "incompatible types for comparison: int and string"},
		{"bool order", "{{lt .Yes .No}}", "booleans can only be compared with eq and ne"},
		{"missing in an else-if", "{{if .No}}{{else if .Missing}}{{end}}", "no value for .Missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := Parse("t", tt.src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tp.Execute(data); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// FuzzParseExecute: operators' templates are outside input. Whatever the
// source, parsing and executing never panic, are deterministic, text
// without "{{" renders as itself, and in HTML mode no value adds markup.
func FuzzParseExecute(f *testing.F) {
	for _, s := range []string{
		"Hello {{.Name}}", `{{define "subject"}}x {{.N}}{{end}}`, "{{if eq .N 1 2}}a{{else if .Yes}}b{{else}}c{{end}}",
		"{{- /* c */ -}}", "{{and (gt .N 0) (not .No)}}", `{{"a\"}}"}}`, "{{((((.N))))}}", "a {{- .Name -}} b", "{{if}}{{end}}",
		"{{.HTML}}<p>", "{{or .Empty .HTML}}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		for _, html := range []bool{false, true} {
			tp, err := Parse("fuzz", src, Options{HTML: html})
			if err != nil {
				continue
			}
			got, err := tp.Execute(data)
			again, err2 := tp.Execute(data)
			if got != again || (err == nil) != (err2 == nil) {
				t.Fatalf("not deterministic: %q %v / %q %v", got, err, again, err2)
			}
			if !strings.Contains(src, "{{") && (err != nil || got != src) {
				t.Fatalf("plain text %q rendered as %q (%v)", src, got, err)
			}
			if html && err == nil && strings.Count(got, "<") > strings.Count(src, "<") {
				t.Fatalf("a value added markup: %q -> %q", src, got)
			}
		}
	})
}
