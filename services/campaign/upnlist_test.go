package campaign

import (
	"slices"
	"strings"
	"testing"
)

func TestParseUPNs(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		want     []string
		problems int
	}{
		{"one per line", "a@x.com\nB@X.com\n\n", []string{"a@x.com", "b@x.com"}, 0},
		{"header, BOM, CRLF", "\xef\xbb\xbfDisplay Name,UserPrincipalName\r\nAlice,alice@x.com\r\nBob,bob@x.com\r\n", []string{"alice@x.com", "bob@x.com"}, 0},
		{"header user_principal_name", "id;User_Principal_Name\n1;a@x.com\n", []string{"a@x.com"}, 0},
		{"semicolons and quotes", "\"Doe; John\";\"john@x.com\"\n", []string{"john@x.com"}, 0},
		{"quoted comma in name", "\"Doe, John\",john@x.com\n", []string{"john@x.com"}, 0},
		{"duplicates kept once", "a@x.com\nA@x.com\n a@x.com \n", []string{"a@x.com"}, 0},
		{"bad lines reported", "a@x.com\nnot-a-upn\nb c@x.com\nx@nodot\n*)(cn=*@x.com\n", []string{"a@x.com"}, 4},
		{"header only", "upn\n", nil, 0},
		{"data column by @ without header", "1,2,c@x.com\n", []string{"c@x.com"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, problems, err := ParseUPNs(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) || len(problems) != tc.problems {
				t.Fatalf("got %q, %d problems %+v; want %q, %d", got, len(problems), problems, tc.want, tc.problems)
			}
		})
	}
	if _, _, err := ParseUPNs(strings.NewReader("\xff\xfe")); err == nil {
		t.Fatal("non-UTF-8: no error")
	}
}

// FuzzParseUPNs: never panics; everything returned is a valid, normalised,
// unique UPN.
func FuzzParseUPNs(f *testing.F) {
	for _, s := range []string{"a@x.com\n", "\xef\xbb\xbfupn\r\n\"a@x.com\"\n", "x;y\n1;\"b@y.org\"", "\"unterminated\n", "a@b.c,d@e.f\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, _, err := ParseUPNs(strings.NewReader(in))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, u := range got {
			n, err := NormalUPN(u)
			if err != nil || n != u {
				t.Fatalf("returned %q, which is not a normalised UPN (%v)", u, err)
			}
			if seen[u] {
				t.Fatalf("returned %q twice", u)
			}
			seen[u] = true
		}
	})
}
