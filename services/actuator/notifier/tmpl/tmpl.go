// Package tmpl is the template language of notices: the subset of Go's
// text/template that notice templates use, over flat data (a map of
// strings, ints and bools), evaluated without reflection.
//
// Why not text/template: it looks methods up by name
// (reflect.Value.MethodByName), and a binary that can reach that call
// keeps every exported method of every type, since the linker cannot know
// which one a template names. In pwsync that kept ~90 MB of unused
// msgraph-sdk-go model methods (issue 22).
//
// The language:
//
//	{{.Field}} {{$.Field}}           a value of the data (a missing key is an error)
//	{{if X}} {{else if X}} {{else}} {{end}}
//	{{define "name"}}...{{end}}      a named block (top level only)
//	{{/* comment */}}                and the trim markers {{- and -}}
//	eq ne lt le gt ge not and or     functions, e.g. {{if gt .DaysAgo 0}}, {{if and .A (not .B)}}
//	"string" 12 -3 true false        literals
//
// A value is true when it is a non-empty string, a non-zero int or true.
// eq takes two or more arguments (true if the first equals any other);
// comparing values of different kinds is an error. Anything else
// (range, with, template, block, pipes, variables, other functions,
// fields of fields) is refused when the template is parsed. In HTML mode
// every value printed is escaped as html/template escapes text
// (& < > " ' + and NUL), wherever it stands: values inside attributes must
// be quoted.
package tmpl

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Options are the parse options.
type Options struct {
	// HTML escapes every value printed.
	HTML bool
	// Fields are the names a template may use; nil allows any name.
	Fields map[string]bool
}

// Template is a parsed template: its top-level body and its blocks.
type Template struct {
	name   string
	html   bool
	root   []node
	blocks map[string][]node
}

type node interface{}

type textNode string

type outNode struct {
	x    expr
	line int
}

type ifNode struct {
	cond expr
	then []node
	els  []node
	line int
}

type expr interface{}

type fieldExpr struct{ name string }

type litExpr struct{ v any }

type callExpr struct {
	fn   string
	args []expr
}

// arity is each function's minimum and maximum argument count (-1: any).
var arity = map[string][2]int{
	"eq": {2, -1}, "ne": {2, 2}, "lt": {2, 2}, "le": {2, 2}, "gt": {2, 2}, "ge": {2, 2},
	"not": {1, 1}, "and": {1, -1}, "or": {1, -1},
}

// maxDepth bounds nesting (parentheses, if), against hostile input.
const maxDepth = 100

// Parse parses src; name is for errors ("name:line: ...").
func Parse(name, src string, o Options) (*Template, error) {
	p := &parser{t: &Template{name: name, html: o.HTML, blocks: map[string][]node{}}, src: src, fields: o.Fields}
	if err := p.run(); err != nil {
		return nil, err
	}
	return p.t, nil
}

// Has reports whether block name is defined.
func (t *Template) Has(block string) bool {
	_, ok := t.blocks[block]
	return ok
}

// Execute renders the top-level body.
func (t *Template) Execute(data map[string]any) (string, error) {
	var b strings.Builder
	if err := t.exec(&b, t.root, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// ExecuteBlock renders the block defined as name.
func (t *Template) ExecuteBlock(name string, data map[string]any) (string, error) {
	body, ok := t.blocks[name]
	if !ok {
		return "", fmt.Errorf("%s: no block %q", t.name, name)
	}
	var b strings.Builder
	if err := t.exec(&b, body, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// --- parsing

type frame struct {
	define  string // the block's name, for a define
	body    []node // the define's body
	ifn     *ifNode
	inElse  bool
	chained bool // an else-if, closed by its parent's end
	line    int
}

type parser struct {
	t      *Template
	src    string
	fields map[string]bool
	stack  []*frame
	line   int // of the action being parsed
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", p.t.name, p.line, fmt.Sprintf(format, args...))
}

func (p *parser) add(n node) {
	if len(p.stack) == 0 {
		p.t.root = append(p.t.root, n)
		return
	}
	f := p.stack[len(p.stack)-1]
	switch {
	case f.ifn == nil:
		f.body = append(f.body, n)
	case f.inElse:
		f.ifn.els = append(f.ifn.els, n)
	default:
		f.ifn.then = append(f.ifn.then, n)
	}
}

func (p *parser) run() error {
	src := p.src
	trimNext := false
	for pos := 0; pos < len(src); {
		i := strings.Index(src[pos:], "{{")
		text := src[pos:]
		if i >= 0 {
			text = src[pos : pos+i]
		}
		if trimNext {
			text = strings.TrimLeft(text, " \t\r\n")
		}
		if i < 0 {
			if text != "" {
				p.add(textNode(text))
			}
			break
		}
		start := pos + i + 2
		p.line = 1 + strings.Count(src[:pos+i], "\n")
		if strings.HasPrefix(src[start:], "- ") || strings.HasPrefix(src[start:], "-\t") ||
			strings.HasPrefix(src[start:], "-\n") || strings.HasPrefix(src[start:], "-\r") {
			text = strings.TrimRight(text, " \t\r\n")
			start += 2
		}
		if text != "" {
			p.add(textNode(text))
		}
		end, err := p.closing(start)
		if err != nil {
			return err
		}
		inner := src[start:end]
		pos = end + 2
		trimNext = false
		if n := len(inner); n >= 2 && inner[n-1] == '-' && strings.ContainsRune(" \t\r\n", rune(inner[n-2])) {
			inner = inner[:n-2]
			trimNext = true
		}
		if err := p.action(strings.TrimSpace(inner)); err != nil {
			return err
		}
	}
	if len(p.stack) > 0 {
		f := p.stack[len(p.stack)-1]
		p.line = f.line
		if f.ifn != nil {
			return p.errorf("unclosed {{if}}: no {{end}}")
		}
		return p.errorf("unclosed {{define %q}}: no {{end}}", f.define)
	}
	return nil
}

// closing finds the "}}" that ends the action starting at start, skipping
// string literals and comments.
func (p *parser) closing(start int) (int, error) {
	src := p.src
	if strings.HasPrefix(strings.TrimLeft(src[start:], " \t\r\n"), "/*") {
		c := strings.Index(src[start:], "*/")
		if c < 0 {
			return 0, p.errorf("unclosed comment")
		}
		rest := start + c + 2
		e := strings.Index(src[rest:], "}}")
		if e < 0 || strings.Trim(src[rest:rest+e], " \t\r\n-") != "" {
			return 0, p.errorf("comment must end with */}}")
		}
		return rest + e, nil
	}
	for i := start; i < len(src); i++ {
		switch src[i] {
		case '"', '`':
			q := src[i]
			j := i + 1
			for ; j < len(src) && src[j] != q; j++ {
				if q == '"' && src[j] == '\\' {
					j++
				} else if q == '"' && src[j] == '\n' {
					return 0, p.errorf("unterminated string")
				}
			}
			if j >= len(src) {
				return 0, p.errorf("unterminated string")
			}
			i = j
		case '}':
			if i+1 < len(src) && src[i+1] == '}' {
				return i, nil
			}
		}
	}
	return 0, p.errorf("unclosed action: no }}")
}

func (p *parser) action(s string) error {
	if strings.HasPrefix(s, "/*") {
		return nil // comment
	}
	toks, err := p.lex(s)
	if err != nil {
		return err
	}
	if len(toks) == 0 {
		return p.errorf("empty action")
	}
	top := func() *frame {
		if len(p.stack) == 0 {
			return nil
		}
		return p.stack[len(p.stack)-1]
	}
	head := toks[0]
	switch {
	case head.is('i', "define"):
		if len(p.stack) > 0 {
			return p.errorf("{{define}} must be at the top level")
		}
		if len(toks) != 2 || toks[1].kind != 's' {
			return p.errorf(`want {{define "name"}}`)
		}
		name := toks[1].val.(string)
		if p.t.Has(name) {
			return p.errorf("block %q defined twice", name)
		}
		p.t.blocks[name] = nil // reserve the name
		p.stack = append(p.stack, &frame{define: name, line: p.line})
		return nil
	case head.is('i', "if"):
		if len(p.stack) >= maxDepth {
			return p.errorf("nested too deep")
		}
		cond, err := p.expr(toks[1:], 0)
		if err != nil {
			return err
		}
		n := &ifNode{cond: cond, line: p.line}
		p.add(n)
		p.stack = append(p.stack, &frame{ifn: n, line: p.line})
		return nil
	case head.is('i', "else"):
		f := top()
		if f == nil || f.ifn == nil || f.inElse {
			return p.errorf("{{else}} outside {{if}}")
		}
		f.inElse = true
		if len(toks) == 1 {
			return nil
		}
		if !toks[1].is('i', "if") {
			return p.errorf("unexpected %q after else (want {{else}} or {{else if ...}})", toks[1].src)
		}
		if len(p.stack) >= maxDepth {
			return p.errorf("nested too deep")
		}
		cond, err := p.expr(toks[2:], 0)
		if err != nil {
			return err
		}
		n := &ifNode{cond: cond, line: p.line}
		p.add(n)
		p.stack = append(p.stack, &frame{ifn: n, chained: true, line: p.line})
		return nil
	case head.is('i', "end"):
		if len(toks) != 1 {
			return p.errorf("unexpected %q after end", toks[1].src)
		}
		for {
			f := top()
			if f == nil {
				return p.errorf("{{end}} without {{if}} or {{define}}")
			}
			p.stack = p.stack[:len(p.stack)-1]
			if f.ifn == nil {
				p.t.blocks[f.define] = f.body
			}
			if !f.chained {
				return nil
			}
		}
	case head.kind == 'i' && unsupported[head.src]:
		return p.errorf("{{%s}} is not supported (see the template language in the README)", head.src)
	}
	x, err := p.expr(toks, 0)
	if err != nil {
		return err
	}
	p.add(&outNode{x: x, line: p.line})
	return nil
}

var unsupported = map[string]bool{"range": true, "with": true, "template": true, "block": true, "break": true, "continue": true, "nil": true}

// token kinds: 'i' identifier, 'f' field, 'n' number, 's' string, 'b' bool, '(' and ')'.
type token struct {
	kind byte
	src  string
	val  any // field name, int, string, bool
}

func (t token) is(kind byte, src string) bool { return t.kind == kind && t.src == src }

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *parser) lex(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(' || c == ')':
			out = append(out, token{kind: c, src: string(c)})
			i++
		case c == '"' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if c == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, p.errorf("unterminated string")
			}
			v, err := strconv.Unquote(s[i : j+1])
			if err != nil {
				return nil, p.errorf("bad string %s: %v", s[i:j+1], err)
			}
			out = append(out, token{kind: 's', src: s[i : j+1], val: v})
			i = j + 1
		case c == '.' || c == '$':
			j := i
			if c == '$' {
				if !strings.HasPrefix(s[i:], "$.") {
					return nil, p.errorf("variables are not supported (only $.Field)")
				}
				j++
			}
			k := j + 1
			for k < len(s) && isIdent(s[k]) {
				k++
			}
			name := s[j+1 : k]
			if name == "" || name[0] >= '0' && name[0] <= '9' {
				return nil, p.errorf("want .Field, have %q", s[i:k])
			}
			if k < len(s) && s[k] == '.' {
				return nil, p.errorf("%s: fields of fields are not supported (the data is flat)", s[i:k])
			}
			if p.fields != nil && !p.fields[name] {
				return nil, p.errorf("unknown field %s (known: %s)", s[i:k], known(p.fields))
			}
			out = append(out, token{kind: 'f', src: s[i:k], val: name})
			i = k
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			n, err := strconv.Atoi(s[i:j])
			if err != nil {
				return nil, p.errorf("bad number %q", s[i:j])
			}
			out = append(out, token{kind: 'n', src: s[i:j], val: n})
			i = j
		case isIdent(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			w := s[i:j]
			if w == "true" || w == "false" {
				out = append(out, token{kind: 'b', src: w, val: w == "true"})
			} else {
				out = append(out, token{kind: 'i', src: w})
			}
			i = j
		case c == '|':
			return nil, p.errorf("pipelines (|) are not supported")
		case c == ':' || c == '=':
			return nil, p.errorf("variables are not supported (only $.Field)")
		default:
			return nil, p.errorf("unexpected %q in action", c)
		}
	}
	return out, nil
}

// expr parses a whole token list: an operand, or a function and its arguments.
func (p *parser) expr(toks []token, depth int) (expr, error) {
	if depth > maxDepth {
		return nil, p.errorf("nested too deep")
	}
	if len(toks) == 0 {
		return nil, p.errorf("missing value")
	}
	if toks[0].kind != 'i' {
		x, rest, err := p.operand(toks, depth)
		if err != nil {
			return nil, err
		}
		if len(rest) > 0 {
			return nil, p.errorf("unexpected %q after a value (a function goes first: {{eq .A .B}})", rest[0].src)
		}
		return x, nil
	}
	fn := toks[0].src
	ar, ok := arity[fn]
	if !ok {
		return nil, p.errorf("unknown function %q (supported: %s)", fn, known(arityNames))
	}
	c := &callExpr{fn: fn}
	for rest := toks[1:]; len(rest) > 0; {
		x, r, err := p.operand(rest, depth)
		if err != nil {
			return nil, err
		}
		c.args, rest = append(c.args, x), r
	}
	if len(c.args) < ar[0] || ar[1] >= 0 && len(c.args) > ar[1] {
		return nil, p.errorf("%s: wrong number of arguments (%d)", fn, len(c.args))
	}
	return c, nil
}

var arityNames = func() map[string]bool {
	m := map[string]bool{}
	for k := range arity {
		m[k] = true
	}
	return m
}()

// operand parses one value (a field, a literal or a parenthesized
// expression) and returns the tokens after it.
func (p *parser) operand(toks []token, depth int) (expr, []token, error) {
	t := toks[0]
	switch t.kind {
	case 'f':
		return fieldExpr{name: t.val.(string)}, toks[1:], nil
	case 'n', 's', 'b':
		return litExpr{v: t.val}, toks[1:], nil
	case '(':
		level := 0
		for i, u := range toks {
			switch u.kind {
			case '(':
				level++
			case ')':
				level--
				if level == 0 {
					x, err := p.expr(toks[1:i], depth+1)
					return x, toks[i+1:], err
				}
			}
		}
		return nil, nil, p.errorf("unclosed (")
	case 'i':
		if _, ok := arity[t.src]; ok {
			return nil, nil, p.errorf("%s as an argument must be in parentheses: (%s ...)", t.src, t.src)
		}
		return nil, nil, p.errorf("unknown function %q (supported: %s)", t.src, known(arityNames))
	default:
		return nil, nil, p.errorf("unexpected %q", t.src)
	}
}

func known(m map[string]bool) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// --- execution

func (t *Template) exec(b *strings.Builder, nodes []node, data map[string]any) error {
	for _, n := range nodes {
		switch n := n.(type) {
		case textNode:
			b.WriteString(string(n))
		case *outNode:
			v, err := t.eval(n.x, data, n.line)
			if err != nil {
				return err
			}
			s, err := format(v)
			if err != nil {
				return fmt.Errorf("%s:%d: %w", t.name, n.line, err)
			}
			if t.html {
				s = escapeHTML(s)
			}
			b.WriteString(s)
		case *ifNode:
			v, err := t.eval(n.cond, data, n.line)
			if err != nil {
				return err
			}
			body := n.els
			if truth(v) {
				body = n.then
			}
			if err := t.exec(b, body, data); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Template) eval(x expr, data map[string]any, line int) (any, error) {
	switch x := x.(type) {
	case fieldExpr:
		v, ok := data[x.name]
		if !ok {
			return nil, fmt.Errorf("%s:%d: no value for .%s", t.name, line, x.name)
		}
		return v, nil
	case litExpr:
		return x.v, nil
	case *callExpr:
		arg := func(i int) (any, error) { return t.eval(x.args[i], data, line) }
		switch x.fn {
		case "not":
			v, err := arg(0)
			return !truth(v), err
		case "and", "or":
			var v any
			for i := range x.args {
				var err error
				if v, err = arg(i); err != nil {
					return nil, err
				}
				if truth(v) != (x.fn == "and") {
					return v, nil
				}
			}
			return v, nil
		}
		a, err := arg(0)
		if err != nil {
			return nil, err
		}
		for i := 1; i < len(x.args); i++ {
			b, err := arg(i)
			if err != nil {
				return nil, err
			}
			c, err := compare(a, b, x.fn)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", t.name, line, x.fn, err)
			}
			if x.fn != "eq" || c {
				return c, nil // eq: true if any matches; the others take two
			}
		}
		return false, nil
	}
	return nil, fmt.Errorf("%s:%d: unknown expression", t.name, line)
}

// compare applies op to two values of the same kind.
func compare(a, b any, op string) (bool, error) {
	var c int // -1, 0, 1
	switch a := a.(type) {
	case int:
		bv, ok := b.(int)
		if !ok {
			return false, fmt.Errorf("incompatible types for comparison: %T and %T", a, b)
		}
		c = cmpInt(a, bv)
	case string:
		bv, ok := b.(string)
		if !ok {
			return false, fmt.Errorf("incompatible types for comparison: %T and %T", a, b)
		}
		c = strings.Compare(a, bv)
	case bool:
		bv, ok := b.(bool)
		if !ok {
			return false, fmt.Errorf("incompatible types for comparison: %T and %T", a, b)
		}
		if op != "eq" && op != "ne" {
			return false, fmt.Errorf("booleans can only be compared with eq and ne")
		}
		if a != bv {
			c = 1
		}
	default:
		return false, fmt.Errorf("cannot compare %T", a)
	}
	switch op {
	case "eq":
		return c == 0, nil
	case "ne":
		return c != 0, nil
	case "lt":
		return c < 0, nil
	case "le":
		return c <= 0, nil
	case "gt":
		return c > 0, nil
	default: // ge
		return c >= 0, nil
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func truth(v any) bool {
	switch v := v.(type) {
	case string:
		return v != ""
	case int:
		return v != 0
	case bool:
		return v
	}
	return false
}

func format(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int:
		return strconv.Itoa(v), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", fmt.Errorf("cannot print a %T", v)
}

// htmlEscaper escapes as html/template escapes values in HTML text.
var htmlEscaper = strings.NewReplacer("\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;")

func escapeHTML(s string) string { return htmlEscaper.Replace(s) }
