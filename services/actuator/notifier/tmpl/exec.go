package tmpl

// Execution: walking the node tree over the data, comparisons, truth,
// printing and HTML escaping.

import (
	"fmt"
	"strconv"
	"strings"
)

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
