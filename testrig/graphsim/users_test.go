package graphsim

import (
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestGetUser(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	tests := []struct {
		name     string
		path     string
		wantKeys []string
		check    func(t *testing.T, body map[string]any)
	}{
		{
			name:     "default properties omit passwordProfile",
			path:     "/v1.0/users/" + cloud.ID,
			wantKeys: []string{"@odata.context", "businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone", "officeLocation", "preferredLanguage", "surname", "userPrincipalName"},
			check: func(t *testing.T, b map[string]any) {
				if b["@odata.context"] != "https://graph.microsoft.com/v1.0/$metadata#users/$entity" {
					t.Errorf("context %v", b["@odata.context"])
				}
			},
		},
		{
			name:     "select passwordProfile and sync state",
			path:     "/v1.0/users/" + synced.ID + "?$select=id,passwordProfile,onPremisesSyncEnabled,passwordPolicies,onPremisesImmutableId,lastPasswordChangeDateTime",
			wantKeys: []string{"@odata.context", "id", "lastPasswordChangeDateTime", "onPremisesImmutableId", "onPremisesSyncEnabled", "passwordPolicies", "passwordProfile"},
			check: func(t *testing.T, b map[string]any) {
				pp := b["passwordProfile"].(map[string]any)
				if pp["password"] != nil || pp["forceChangePasswordNextSignIn"] != false {
					t.Errorf("passwordProfile %v: the password must never be readable", pp)
				}
				if b["onPremisesSyncEnabled"] != true || b["passwordPolicies"] != "DisablePasswordExpiration" || b["lastPasswordChangeDateTime"] != nil {
					t.Errorf("body %v", b)
				}
				if !strings.HasSuffix(b["@odata.context"].(string), "#users(id,passwordProfile,onPremisesSyncEnabled,passwordPolicies,onPremisesImmutableId,lastPasswordChangeDateTime)/$entity") {
					t.Errorf("context %v", b["@odata.context"])
				}
			},
		},
		{
			name:     "by userPrincipalName, case-insensitive, select is case-insensitive",
			path:     "/v1.0/users/CLOUD@contoso.com?$select=ID,LastPasswordChangeDateTime,onPremisesSyncEnabled",
			wantKeys: []string{"@odata.context", "id", "lastPasswordChangeDateTime", "onPremisesSyncEnabled"},
			check: func(t *testing.T, b map[string]any) {
				if b["id"] != cloud.ID || b["lastPasswordChangeDateTime"] != "2024-01-02T03:04:05Z" || b["onPremisesSyncEnabled"] != nil {
					t.Errorf("body %v", b)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("GET", tt.path, nil)
			wantStatus(t, r, 200)
			if got := keys(r.json); !slices.Equal(got, tt.wantKeys) {
				t.Fatalf("keys %v, want %v", got, tt.wantKeys)
			}
			if got := r.header.Get("x-ms-resource-unit"); got != "1" {
				t.Errorf("x-ms-resource-unit %q, want 1", got)
			}
			tt.check(t, r.json)
		})
	}

	t.Run("unknown user is 404", func(t *testing.T) {
		wantError(t, e.do("GET", "/v1.0/users/nobody@contoso.com", nil), 404, codeNotFound)
	})
	t.Run("unknown $select property is 400", func(t *testing.T) {
		wantError(t, e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=passwrodProfile", nil), 400, codeODataBadRequest)
	})
	t.Run("unknown segment is 400", func(t *testing.T) {
		wantError(t, e.do("GET", "/v1.0/usrs", nil), 400, codeODataBadRequest)
	})
	t.Run("unsupported method is 405", func(t *testing.T) {
		wantStatus(t, e.do("PUT", "/v1.0/users/"+cloud.ID, []byte(`{}`)), 405)
	})
}

func TestListUsers(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	e.srv.PutUser(User{UserPrincipalName: "o'brien@contoso.com", AccountEnabled: false})
	filter := func(f string) string { return "/v1.0/users?$select=id&$filter=" + url.QueryEscape(f) }
	tests := []struct {
		name    string
		path    string
		headers []string
		wantIDs []string // nil: expect an error
		wantErr string
	}{
		{"immutable id", filter("onPremisesImmutableId eq '" + synced.OnPremisesImmutableId + "'"), nil, []string{synced.ID}, ""},
		{"upn case-insensitive", filter("userPrincipalName eq 'CLOUD@contoso.com'"), nil, []string{cloud.ID}, ""},
		{"no match", filter("onPremisesImmutableId eq 'nope'"), nil, []string{}, ""},
		{"escaped quote", filter("userPrincipalName eq 'o''brien@contoso.com'"), nil, []string{e.user("o'brien@contoso.com").ID}, ""},
		{"or and in", filter("id in ('" + cloud.ID + "') or startswith(userPrincipalName,'synced')"), nil, []string{cloud.ID, synced.ID}, ""},
		{"boolean", filter("accountEnabled eq false"), nil, []string{e.user("o'brien@contoso.com").ID}, ""},
		{"ne needs advanced query", filter("accountEnabled ne false"), nil, nil, codeUnsupportedQuery},
		{"ne as advanced query", filter("accountEnabled ne false") + "&$count=true", []string{"ConsistencyLevel", "eventual"}, []string{cloud.ID, synced.ID}, ""},
		{"unknown property", filter("favouriteColour eq 'red'"), nil, nil, codeODataBadRequest},
		{"unsupported operator", filter("displayName gt 'a'"), nil, nil, codeUnsupportedQuery},
		{"unterminated string", filter("displayName eq 'a"), nil, nil, codeUnsupportedQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("GET", tt.path, nil, tt.headers...)
			if tt.wantErr != "" {
				wantError(t, r, 400, tt.wantErr)
				return
			}
			wantStatus(t, r, 200)
			got := []string{}
			for _, v := range r.json["value"].([]any) {
				got = append(got, v.(map[string]any)["id"].(string))
			}
			if !slices.Equal(got, tt.wantIDs) {
				t.Fatalf("ids %v, want %v", got, tt.wantIDs)
			}
		})
	}
}

func TestListUsersPaging(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 5 {
		e.srv.PutUser(User{UserPrincipalName: "u" + string(rune('a'+i)) + "@contoso.com"})
	}
	var upns []string
	next := "/v1.0/users?$top=2&$select=userPrincipalName"
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		r := e.do("GET", next, nil)
		wantStatus(t, r, 200)
		if ru := r.header.Get("x-ms-resource-unit"); ru != "1" {
			t.Errorf("x-ms-resource-unit %q, want 1 (2 for the collection, -1 for $select)", ru)
		}
		for _, v := range r.json["value"].([]any) {
			upns = append(upns, v.(map[string]any)["userPrincipalName"].(string))
		}
		next = ""
		if nl, ok := r.json["@odata.nextLink"].(string); ok {
			if !strings.HasPrefix(nl, e.srv.GraphBaseURL()+"/users?") {
				t.Fatalf("nextLink %q does not point back at the simulator", nl)
			}
			next = strings.TrimPrefix(nl, e.srv.URL())
		}
	}
	want := []string{"ua@contoso.com", "ub@contoso.com", "uc@contoso.com", "ud@contoso.com", "ue@contoso.com"}
	if !slices.Equal(upns, want) {
		t.Fatalf("pages gave %v, want %v", upns, want)
	}
	wantError(t, e.do("GET", "/v1.0/users?$top=1000", nil), 400, codeBadRequest)
}

func TestPatchSyncedUser(t *testing.T) {
	e := newEnv(t, Options{})
	_, synced := seedUsers(e.srv)
	tests := []struct {
		name string
		body string
		want int
	}{
		{"flag only", `{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`, 400},
		{"new password", `{"passwordProfile":{"password":"Temp-Passw0rd!","forceChangePasswordNextSignIn":true}}`, 400},
		{"displayName is mastered on-prem", `{"displayName":"Renamed"}`, 400},
		{"accountEnabled is mastered on-prem", `{"accountEnabled":false}`, 400},
		{"mixed: one mastered property refuses all", `{"passwordPolicies":"None","displayName":"Renamed"}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("PATCH", "/v1.0/users/"+synced.ID, []byte(tt.body))
			wantError(t, r, tt.want, codeBadRequest)
			if r.errorMessage() != onPremMastered {
				t.Fatalf("message %q", r.errorMessage())
			}
			if got := e.user(synced.ID); got != synced {
				t.Fatalf("user changed by a refused write:\n got %+v\nwant %+v", got, synced)
			}
		})
	}
	t.Run("passwordPolicies is writable", func(t *testing.T) {
		wantStatus(t, e.do("PATCH", "/v1.0/users/"+synced.ID, []byte(`{"passwordPolicies":"None"}`)), 204)
		if got := e.user(synced.ID).PasswordPolicies; got != "None" {
			t.Fatalf("passwordPolicies %q", got)
		}
	})
}

func TestPatchCloudUser(t *testing.T) {
	tests := []struct {
		name      string
		start     func(*User)
		body      string
		want      int
		wantCode  string
		check     func(t *testing.T, before, after User)
		unchanged bool
	}{
		{name: "flag without password sets the flag", body: `{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`, want: 204,
			check: func(t *testing.T, b, a User) {
				if !a.ForceChangePasswordNextSignIn || a.Password != b.Password || !a.LastPasswordChangeDateTime.Equal(b.LastPasswordChangeDateTime) {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "with MFA flag", body: `{"passwordProfile":{"forceChangePasswordNextSignInWithMfa":true}}`, want: 204,
			check: func(t *testing.T, b, a User) {
				if !a.ForceChangePasswordNextSignInWithMfa || a.ForceChangePasswordNextSignIn {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "password without flag defaults the flag to true", body: `{"passwordProfile":{"password":"Temp-Passw0rd!"}}`, want: 204,
			check: func(t *testing.T, b, a User) {
				if a.Password != "Temp-Passw0rd!" || !a.ForceChangePasswordNextSignIn || time.Since(a.LastPasswordChangeDateTime) > time.Minute {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "password with flag false", body: `{"passwordProfile":{"password":"Temp-Passw0rd!","forceChangePasswordNextSignIn":false}}`, want: 204,
			start: func(u *User) { u.ForceChangePasswordNextSignIn = true },
			check: func(t *testing.T, b, a User) {
				if a.Password != "Temp-Passw0rd!" || a.ForceChangePasswordNextSignIn {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "weak password", body: `{"passwordProfile":{"password":"password"}}`, want: 400, wantCode: codeBadRequest, unchanged: true},
		{name: "weak password allowed by DisableStrongPassword", body: `{"passwordProfile":{"password":"password"}}`, want: 204,
			start: func(u *User) { u.PasswordPolicies = "DisablePasswordExpiration, DisableStrongPassword" },
			check: func(t *testing.T, b, a User) {
				if a.Password != "password" {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "several properties", body: `{"displayName":"New Name","passwordPolicies":"DisablePasswordExpiration","accountEnabled":false,"preferredLanguage":null}`, want: 204,
			check: func(t *testing.T, b, a User) {
				if a.DisplayName != "New Name" || a.PasswordPolicies != "DisablePasswordExpiration" || a.AccountEnabled || a.PreferredLanguage != "" {
					t.Errorf("after %+v", a)
				}
			}},
		{name: "unknown property", body: `{"displayName":"x","favouriteColour":"red"}`, want: 400, wantCode: codeBadRequest, unchanged: true},
		{name: "unknown passwordProfile property", body: `{"passwordProfile":{"forceChangePasswordNextSignIn":true,"pasword":"x"}}`, want: 400, wantCode: codeBadRequest, unchanged: true},
		{name: "read-only property", body: `{"lastPasswordChangeDateTime":"2020-01-01T00:00:00Z"}`, want: 400, wantCode: codeBadRequest, unchanged: true},
		{name: "wrong type", body: `{"accountEnabled":"yes"}`, want: 400, wantCode: codeBadRequest, unchanged: true},
		{name: "not JSON", body: `{"displayName":`, want: 400, wantCode: codeODataBadRequest, unchanged: true},
		{name: "empty body", body: ``, want: 400, wantCode: codeBadRequest, unchanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The flag semantics in the kinder world; TestForceChangeNoop
			// pins Graph's no-op default.
			e := newEnv(t, Options{ForceChangeApplies: true})
			cloud, _ := seedUsers(e.srv)
			if tt.start != nil {
				tt.start(&cloud)
				e.srv.PutUser(cloud)
			}
			r := e.do("PATCH", "/v1.0/users/"+cloud.ID, []byte(tt.body))
			if tt.wantCode != "" {
				wantError(t, r, tt.want, tt.wantCode)
			} else {
				wantStatus(t, r, tt.want)
			}
			after := e.user(cloud.ID)
			if tt.unchanged && after != cloud {
				t.Fatalf("refused write changed the user:\n got %+v\nwant %+v", after, cloud)
			}
			if tt.check != nil {
				tt.check(t, cloud, after)
			}
		})
	}
}

func TestPatchByUPNAndUnknownUser(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	wantStatus(t, e.do("PATCH", "/v1.0/users/Cloud@Contoso.com", map[string]any{"displayName": "By UPN"}), 204)
	if e.user(cloud.ID).DisplayName != "By UPN" {
		t.Fatal("PATCH by UPN did not apply")
	}
	wantError(t, e.do("PATCH", "/v1.0/users/ghost@contoso.com", map[string]any{"displayName": "x"}), 404, codeNotFound)
	// A real but unmodelled property is stored and read back.
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"usageLocation": "DE"}), 204)
	r := e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=usageLocation", nil)
	if r.json["usageLocation"] != "DE" {
		t.Fatalf("usageLocation %v", r.json["usageLocation"])
	}
}

// The flag-only PATCH answers 204 and changes nothing by default
// (microsoft-graph-docs#4267); ForceChangeApplies is the kinder world.
func TestForceChangeNoop(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	flagOnly := map[string]any{"passwordProfile": map[string]any{"forceChangePasswordNextSignIn": true}}

	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, flagOnly), 204)
	if got := e.user(cloud.ID); got != cloud {
		t.Fatalf("noop PATCH changed the user: %+v", got)
	}
	// Reading back shows the missing effect, which is how pwsync detects it.
	r := e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=passwordProfile", nil)
	// The user never had a profile, and the no-op did not give it one.
	if pp, ok := r.json["passwordProfile"]; !ok || pp != nil {
		t.Fatalf("read back %v", r.json)
	}
	// A new password with the flag still works.
	withPassword := map[string]any{"passwordProfile": map[string]any{"password": "Temp-Passw0rd!", "forceChangePasswordNextSignIn": true}}
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, withPassword), 204)
	if got := e.user(cloud.ID); !got.ForceChangePasswordNextSignIn || got.Password != "Temp-Passw0rd!" {
		t.Fatalf("password PATCH under noop: %+v", got)
	}
	// Switched off at run time, the flag-only PATCH takes effect.
	e.srv.PutUser(cloud)
	e.srv.SetForceChangeNoop(false)
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, flagOnly), 204)
	if !e.user(cloud.ID).ForceChangePasswordNextSignIn {
		t.Fatal("flag not set with noop off")
	}
	kind := newEnv(t, Options{ForceChangeApplies: true})
	cloud, _ = seedUsers(kind.srv)
	wantStatus(t, kind.do("PATCH", "/v1.0/users/"+cloud.ID, flagOnly), 204)
	if !kind.user(cloud.ID).ForceChangePasswordNextSignIn {
		t.Fatal("flag not set with ForceChangeApplies")
	}
}

func TestRevokeSignInSessions(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	for _, u := range []User{cloud, synced} { // synced users can be revoked too
		before := time.Now().Add(-time.Second)
		r := e.do("POST", "/v1.0/users/"+u.ID+"/revokeSignInSessions", nil)
		wantStatus(t, r, 200)
		if string(r.raw) != `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean","value":true}` {
			t.Fatalf("body %s", r.raw)
		}
		if got := e.user(u.ID).SignInSessionsValidFromDateTime; got.Before(before) {
			t.Fatalf("signInSessionsValidFromDateTime %v not updated", got)
		}
	}
	wantError(t, e.do("POST", "/v1.0/users/ghost@contoso.com/revokeSignInSessions", nil), 404, codeNotFound)
}

func TestStrongPassword(t *testing.T) {
	tests := []struct {
		pw   string
		want bool
	}{
		{"Passw0rd", true}, {"password", false}, {"PASSWORD1", false}, {"passwor ", false}, {"Pass wor", true},
		{"pass-w0rd", true}, {"Sh0rt!", false}, {strings.Repeat("aB1", 86), false},
	}
	for _, tt := range tests {
		if got := strongPassword(tt.pw); got != tt.want {
			t.Errorf("strongPassword(%q) = %v, want %v", tt.pw, got, tt.want)
		}
	}
}

func TestLookupIndexesFollowChanges(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	find := func(prop, val string) []string {
		t.Helper()
		r := e.do("GET", "/v1.0/users?$select=id&$filter="+url.QueryEscape(prop+" eq '"+val+"'"), nil)
		wantStatus(t, r, 200)
		var ids []string
		for _, v := range r.json["value"].([]any) {
			ids = append(ids, v.(map[string]any)["id"].(string))
		}
		return ids
	}
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"onPremisesImmutableId": "NewImm==", "userPrincipalName": "renamed@contoso.com"}), 204)
	e.srv.PutUser(User{ID: synced.ID, UserPrincipalName: synced.UserPrincipalName, OnPremisesImmutableId: "Replaced=="})
	tests := []struct {
		prop, val string
		want      []string
	}{
		{"onPremisesImmutableId", "newimm==", []string{cloud.ID}}, // eq on strings ignores case
		{"userPrincipalName", "renamed@contoso.com", []string{cloud.ID}},
		{"userPrincipalName", "cloud@contoso.com", nil},
		{"onPremisesImmutableId", synced.OnPremisesImmutableId, nil},
		{"onPremisesImmutableId", "Replaced==", []string{synced.ID}},
		{"id", strings.ToUpper(cloud.ID), []string{cloud.ID}},
		{"onPremisesImmutableId", "", nil},
	}
	for _, tt := range tests {
		if got := find(tt.prop, tt.val); !slices.Equal(got, tt.want) {
			t.Errorf("%s eq '%s': %v, want %v", tt.prop, tt.val, got, tt.want)
		}
	}
	if _, ok := e.srv.User("cloud@contoso.com"); ok {
		t.Error("old UPN still resolves")
	}
}
