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
