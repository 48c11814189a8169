package graphsim

import (
	"fmt"
	"strings"
	"unicode"
)

// This file holds the OData query options the simulator understands on
// users: $select and a $filter subset (eq, ne, in, startswith, endswith,
// and, or, not, parentheses) over string and boolean properties.

// queryError is an OData query the simulator refuses; code and message are
// Graph's.
type queryError struct{ code, msg string }

func (e *queryError) Error() string { return e.msg }

// parseSelect resolves a $select list to canonical property names.
func parseSelect(raw string, known func(string) (string, bool)) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var out []string
	for _, p := range strings.Split(raw, ",") {
		p = strings.TrimSpace(p)
		name, ok := known(p)
		if !ok {
			return nil, &queryError{codeODataBadRequest, fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.user'.", p)}
		}
		out = append(out, name)
	}
	return out, nil
}

// filterExpr is a parsed $filter, evaluated against a property getter
// that returns a string, a bool, or nil (null).
type filterExpr func(get func(string) any) bool

// filterParser is a small recursive-descent parser:
//
//	expr   = term { "or" term }
//	term   = factor { "and" factor }
//	factor = "not" factor | "(" expr ")" | func "(" prop "," literal ")" | prop op literal | prop "in" "(" literal {"," literal} ")"
type filterParser struct {
	toks     []string
	pos      int
	known    func(string) (string, bool)
	advanced bool // used ne, not or endswith: Graph's "advanced queries"
}

// parseFilter parses a $filter. advanced reports whether it uses operators
// that Graph only accepts as advanced queries (ConsistencyLevel: eventual
// and $count=true).
func parseFilter(raw string, known func(string) (string, bool)) (f filterExpr, advanced bool, err error) {
	toks, err := tokenize(raw)
	if err != nil {
		return nil, false, err
	}
	p := &filterParser{toks: toks, known: known}
	f, err = p.expr()
	if err != nil {
		return nil, false, err
	}
	if p.pos != len(p.toks) {
		return nil, false, unsupported("unexpected '%s'", p.toks[p.pos])
	}
	return f, p.advanced, nil
}

func unsupported(format string, args ...any) error {
	return &queryError{codeUnsupportedQuery, "Unsupported or invalid query filter clause: " + fmt.Sprintf(format, args...) + "."}
}

func tokenize(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')' || c == ',':
			toks = append(toks, string(c))
			i++
		case c == '\'':
			// A string literal; '' is an escaped quote. The token keeps its
			// opening quote so that it cannot be taken for a keyword.
			var b strings.Builder
			b.WriteByte('\'')
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' {
						b.WriteByte('\'')
						j++
						continue
					}
					break
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, unsupported("unterminated string literal")
			}
			toks = append(toks, b.String())
			i = j + 1
		default:
			j := i
			for j < len(s) && (unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j])) || strings.IndexByte("_.-/@", s[j]) >= 0) {
				j++
			}
			if j == i {
				return nil, unsupported("unexpected character '%c'", c)
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}

func (p *filterParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *filterParser) next() string {
	t := p.peek()
	if p.pos < len(p.toks) {
		p.pos++
	}
	return t
}

func (p *filterParser) expect(t string) error {
	if got := p.next(); got != t {
		return unsupported("expected '%s', found '%s'", t, got)
	}
	return nil
}

func (p *filterParser) expr() (filterExpr, error) {
	left, err := p.term()
	if err != nil {
		return nil, err
	}
	for strings.EqualFold(p.peek(), "or") {
		p.next()
		right, err := p.term()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(get func(string) any) bool { return l(get) || right(get) }
	}
	return left, nil
}

func (p *filterParser) term() (filterExpr, error) {
	left, err := p.factor()
	if err != nil {
		return nil, err
	}
	for strings.EqualFold(p.peek(), "and") {
		p.next()
		right, err := p.factor()
		if err != nil {
			return nil, err
		}
		l := left
		left = func(get func(string) any) bool { return l(get) && right(get) }
	}
	return left, nil
}

func (p *filterParser) factor() (filterExpr, error) {
	t := p.next()
	switch {
	case t == "":
		return nil, unsupported("the expression ends early")
	case strings.EqualFold(t, "not"):
		p.advanced = true
		inner, err := p.factor()
		if err != nil {
			return nil, err
		}
		return func(get func(string) any) bool { return !inner(get) }, nil
	case t == "(":
		inner, err := p.expr()
		if err != nil {
			return nil, err
		}
		return inner, p.expect(")")
	case strings.EqualFold(t, "startswith") || strings.EqualFold(t, "endswith"):
		return p.stringFunc(strings.ToLower(t))
	}
	prop, ok := p.known(t)
	if !ok {
		return nil, &queryError{codeODataBadRequest, fmt.Sprintf("Could not find a property named '%s' on type 'microsoft.graph.user'.", t)}
	}
	switch op := strings.ToLower(p.next()); op {
	case "eq", "ne":
		lit, err := p.literal()
		if err != nil {
			return nil, err
		}
		if op == "ne" {
			p.advanced = true
			return func(get func(string) any) bool { return !equalValues(get(prop), lit) }, nil
		}
		return func(get func(string) any) bool { return equalValues(get(prop), lit) }, nil
	case "in":
		if err := p.expect("("); err != nil {
			return nil, err
		}
		var lits []any
		for {
			lit, err := p.literal()
			if err != nil {
				return nil, err
			}
			lits = append(lits, lit)
			if p.peek() != "," {
				break
			}
			p.next()
		}
		return func(get func(string) any) bool {
			v := get(prop)
			for _, l := range lits {
				if equalValues(v, l) {
					return true
				}
			}
			return false
		}, p.expect(")")
	default:
		return nil, unsupported("operator '%s' is not supported", op)
	}
}

func (p *filterParser) stringFunc(name string) (filterExpr, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	prop, ok := p.known(p.next())
	if !ok {
		return nil, unsupported("%s needs a known property", name)
	}
	if err := p.expect(","); err != nil {
		return nil, err
	}
	lit, err := p.literal()
	if err != nil {
		return nil, err
	}
	want, ok := lit.(string)
	if !ok {
		return nil, unsupported("%s needs a string literal", name)
	}
	if name == "endswith" {
		p.advanced = true
	}
	fn := strings.HasPrefix
	if name == "endswith" {
		fn = strings.HasSuffix
	}
	return func(get func(string) any) bool {
		v, ok := get(prop).(string)
		return ok && fn(strings.ToLower(v), strings.ToLower(want))
	}, p.expect(")")
}

// literal reads 'string', true, false or null.
func (p *filterParser) literal() (any, error) {
	t := p.next()
	switch {
	case strings.HasPrefix(t, "'"):
		return t[1:], nil
	case strings.EqualFold(t, "true"):
		return true, nil
	case strings.EqualFold(t, "false"):
		return false, nil
	case strings.EqualFold(t, "null"):
		return nil, nil
	}
	return nil, unsupported("'%s' is not a supported literal", t)
}

// equalValues compares as Graph does for directory objects: strings
// case-insensitively; an empty string is null.
func equalValues(v, lit any) bool {
	if s, ok := v.(string); ok && s == "" {
		v = nil
	}
	switch l := lit.(type) {
	case nil:
		return v == nil
	case string:
		s, ok := v.(string)
		return ok && strings.EqualFold(s, l)
	case bool:
		b, ok := v.(bool)
		return ok && b == l
	}
	return false
}
