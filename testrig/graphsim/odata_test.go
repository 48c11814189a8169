package graphsim

import (
	"testing"
)

func TestParseFilter(t *testing.T) {
	user := map[string]any{"displayName": "Alice O'Brien", "accountEnabled": true, "mail": nil, "userPrincipalName": "alice@contoso.com"}
	get := func(p string) any { return user[p] }
	tests := []struct {
		filter   string
		want     bool
		advanced bool
		wantErr  bool
	}{
		{filter: "displayName eq 'alice o''brien'", want: true},
		{filter: "accountEnabled eq true and mail eq null", want: true},
		{filter: "accountEnabled eq false or startswith(userPrincipalName,'ALICE')", want: true},
		{filter: "accountEnabled eq false or displayName eq 'x' and accountEnabled eq true", want: false}, // and binds tighter
		{filter: "(accountEnabled eq false or displayName eq 'x') and accountEnabled eq true", want: false},
		{filter: "accountEnabled eq false or (displayName eq 'x' or accountEnabled eq true)", want: true},
		{filter: "userPrincipalName in ('bob@contoso.com', 'alice@contoso.com')", want: true},
		{filter: "mail ne null", want: false, advanced: true},
		{filter: "not (accountEnabled eq true)", want: false, advanced: true},
		{filter: "endswith(userPrincipalName,'@contoso.com')", want: true, advanced: true},
		{filter: "displayName eq", wantErr: true},
		{filter: "displayName lt 'b'", wantErr: true},
		{filter: "startswith(displayName,true)", wantErr: true},
		{filter: "(accountEnabled eq true", wantErr: true},
		{filter: "accountEnabled eq true)", wantErr: true},
		{filter: "colour eq 'red'", wantErr: true},
		{filter: "displayName eq 'open", wantErr: true},
		{filter: "displayName eq 5", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, advanced, err := parseFilter(tt.filter, knownUserProp)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f(get); got != tt.want || advanced != tt.advanced {
				t.Fatalf("got %v advanced %v, want %v %v", got, advanced, tt.want, tt.advanced)
			}
		})
	}
}

// FuzzParseFilter: any input parses or is refused, without panicking, and a
// parsed filter evaluates.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"displayName eq 'a'", "a in ('x','y') or not (b eq true)", "startswith(mail,'x')", "((", "'''"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fn, _, err := parseFilter(s, knownUserProp)
		if err == nil {
			fn(func(string) any { return "x" })
		}
	})
}

func FuzzBatchBody(f *testing.F) {
	f.Add([]byte(`{"requests":[{"id":"1","method":"GET","url":"/users/x","body":null}]}`))
	f.Add([]byte(`{"requests":[{"id":"1","method":"PATCH","url":"users/x","headers":{"Content-Type":"application/json"},"body":{"a":1},"dependsOn":["0"]}]}`))
	srv, err := Start(Options{WriteBudget: -1})
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	srv.PutUser(User{ID: "x", UserPrincipalName: "x@contoso.com"})
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &call{method: "POST", body: body, base: srv.GraphBaseURL(), batchID: "b", done: make(chan struct{}),
			claims: accessClaims{AppID: srv.ClientID(), Tid: srv.TenantID(), Roles: DefaultRoles}}
		r := srv.serveBatch(c)
		if r.status != 200 && r.status != 400 {
			t.Fatalf("batch status %d: %s", r.status, r.body)
		}
	})
}
