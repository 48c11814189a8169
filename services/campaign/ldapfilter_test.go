package campaign

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestValidateFilter(t *testing.T) {
	deep := strings.Repeat("(&", 9) + "(a=b)" + strings.Repeat(")", 9)
	wide := "(|" + strings.Repeat("(a=b)", MaxFilterNodes) + ")"
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"simple", "(department=Finance)", "(department=Finance)", true},
		{"and with spaces around", "  (&(department=Finance)(title=*))  ", "(&(department=Finance)(title=*))", true},
		{"escaped value kept escaped", `(cn=a\2ab)`, `(cn=a\2ab)`, true},
		{"in chain", "(memberOf:1.2.840.113556.1.4.1941:=CN=G,DC=x)", "(memberOf:1.2.840.113556.1.4.1941:=CN=G,DC=x)", true},
		{"empty", "", "", false},
		{"bare", "department=Finance", "", false},
		{"injection: closes the AND and adds an OR", "(department=Finance))(|(objectClass=*)", "", false},
		{"injection: trailing garbage", "(department=Finance)(objectClass=*)", "", false},
		{"unbalanced", "(&(a=b)", "", false},
		{"NUL", "(a=b\x00)", "", false},
		{"too deep", deep, "", false},
		{"too many terms", wide, "", false},
		{"too long", "(a=" + strings.Repeat("x", MaxFilterLength) + ")", "", false},
		{"bad escape", `(cn=\zz)`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ValidateFilter(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidateFilter(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("error %v does not wrap ErrInvalidFilter", err)
			}
			if tc.ok && got != tc.want {
				t.Fatalf("ValidateFilter(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// The built searches keep the caller's values inside their own terms.
func TestADQueriesEscape(t *testing.T) {
	s := Selector{ADGroups: []string{"CN=a)(objectClass=*,DC=x"}, UPNs: []string{"a*)(|(cn=*@x.com"}}
	for _, q := range s.adQueries("DC=x", "(objectClass=user)", nil) {
		pkt, err := ldap.CompileFilter(q.Filter)
		if err != nil {
			t.Fatalf("%s: built filter %q does not parse: %v", q.Source, q.Filter, err)
		}
		if pkt.Tag != ldap.FilterAnd || len(pkt.Children) != 2 {
			t.Fatalf("%s: %q is not (&(user filter)(one term))", q.Source, q.Filter)
		}
		if strings.Contains(q.Filter, "(objectClass=*") || strings.Contains(q.Filter, "(cn=*") {
			t.Fatalf("%s: caller's value escaped its term: %q", q.Source, q.Filter)
		}
	}
}

// FuzzValidateFilter: whatever is accepted is canonical and stays one term
// of the AND it is put in: the user class filter cannot be escaped.
func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{"(a=b)", "(&(a=b)(c=d))", "(!(a=*))", "(a=b))(|(c=*)", `(cn=\2a)`, "(a:dn:=b)", "(|(a=b)(c>=d)(e<=f)(g~=h))"} {
		f.Add(s)
	}
	const userFilter = "(&(objectCategory=person)(objectClass=user))"
	f.Fuzz(func(t *testing.T, in string) {
		out, err := ValidateFilter(in)
		if err != nil {
			return
		}
		again, err := ValidateFilter(out)
		if err != nil || again != out {
			t.Fatalf("canonical %q of %q does not validate to itself: %q, %v", out, in, again, err)
		}
		pkt, err := ldap.CompileFilter(andFilter(userFilter, out))
		if err != nil {
			t.Fatalf("wrapped %q does not parse: %v", out, err)
		}
		if pkt.Tag != ldap.FilterAnd || len(pkt.Children) != 2 {
			t.Fatalf("%q escaped the AND: %d top-level terms", out, len(pkt.Children))
		}
		first, err := ldap.DecompileFilter(pkt.Children[0])
		if err != nil || first != userFilter {
			t.Fatalf("user filter changed to %q by %q", first, out)
		}
	})
}
