package tmpl

// Parsing: actions ({{...}}) into the node tree, blocks and the if/else
// nesting, and expressions (functions, operands) from the lexer's tokens.

import (
	"fmt"
	"sort"
	"strings"
)

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
