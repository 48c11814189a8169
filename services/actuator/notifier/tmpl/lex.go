package tmpl

// Lexing: one action's text into tokens.

import (
	"strconv"
	"strings"
)

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
