package graphsim

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
)

// deltaRound follows nextLinks from path to the deltaLink and returns the
// rows, the number of pages and the deltaLink as a server path.
func deltaRound(t *testing.T, e *env, path string, headers ...string) (rows []map[string]any, pages int, deltaLink string) {
	t.Helper()
	for next := path; next != ""; pages++ {
		if pages > 20 {
			t.Fatal("delta round does not end")
		}
		r := e.do("GET", next, nil, headers...)
		wantStatus(t, r, 200)
		for _, v := range r.json["value"].([]any) {
			rows = append(rows, v.(map[string]any))
		}
		next = ""
		if nl, ok := r.json["@odata.nextLink"].(string); ok {
			next = strings.TrimPrefix(nl, e.srv.URL())
			if strings.Contains(nl, "$select") {
				t.Fatalf("nextLink repeats the query options: %s", nl)
			}
		} else {
			dl, ok := r.json["@odata.deltaLink"].(string)
			if !ok || !strings.HasPrefix(dl, e.srv.GraphBaseURL()+"/users/delta?$deltatoken=") {
				t.Fatalf("last page without a deltaLink: %s", r.raw)
			}
			deltaLink = strings.TrimPrefix(dl, e.srv.URL())
		}
	}
	return rows, pages, deltaLink
}

func rowIDs(rows []map[string]any) []string {
	var ids []string
	for _, r := range rows {
		ids = append(ids, r["id"].(string))
	}
	sort.Strings(ids)
	return ids
}

func TestUserDelta(t *testing.T) {
	e := newEnv(t, Options{})
	var ids []string
	for i := range 5 {
		u := User{ID: fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i), UserPrincipalName: fmt.Sprintf("u%d@contoso.com", i),
			DisplayName: fmt.Sprintf("U%d", i), PasswordPolicies: "DisablePasswordExpiration", AccountEnabled: true}
		e.srv.PutUser(u)
		ids = append(ids, u.ID)
	}
	first := "/v1.0/users/delta()?$select=id,passwordPolicies,onPremisesImmutableId"

	rows, pages, link := deltaRound(t, e, first, "Prefer", "odata.maxpagesize=2")
	if pages != 3 || !slices.Equal(rowIDs(rows), ids) {
		t.Fatalf("first round: %d pages, ids %v", pages, rowIDs(rows))
	}
	// onPremisesImmutableId was never set on these users: left out, not null.
	if got := keys(rows[0]); !slices.Equal(got, []string{"id", "passwordPolicies"}) {
		t.Fatalf("row keys %v", got)
	}

	rows, _, link = deltaRound(t, e, link)
	if len(rows) != 0 {
		t.Fatalf("no changes, yet the round returned %v", rows)
	}

	// A tracked change, an untracked change, a deletion and a new user.
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+ids[1], map[string]any{"passwordPolicies": "None"}), 204)
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+ids[2], map[string]any{"displayName": "Not tracked"}), 204)
	wantStatus(t, e.do("DELETE", "/v1.0/users/"+ids[3], nil), 204)
	e.srv.PutUser(User{ID: "00000000-0000-0000-0000-000000000009", UserPrincipalName: "new@contoso.com"})

	minimalRows, _, _ := deltaRound(t, e, link, "Prefer", "return=minimal")
	fullRows, _, next := deltaRound(t, e, link)
	want := []string{ids[1], ids[3], "00000000-0000-0000-0000-000000000009"}
	for name, rs := range map[string][]map[string]any{"minimal": minimalRows, "full": fullRows} {
		if !slices.Equal(rowIDs(rs), want) {
			t.Fatalf("%s round ids %v, want %v", name, rowIDs(rs), want)
		}
	}
	byID := func(rs []map[string]any, id string) map[string]any {
		for _, r := range rs {
			if r["id"] == id {
				return r
			}
		}
		return nil
	}
	if got := keys(byID(minimalRows, ids[1])); !slices.Equal(got, []string{"id", "passwordPolicies"}) {
		t.Errorf("minimal row keys %v: want only the changed property", got)
	}
	if got := byID(fullRows, ids[1]); got["passwordPolicies"] != "None" || len(got) != 2 {
		t.Errorf("full row %v", got)
	}
	if got := byID(fullRows, ids[3]); fmt.Sprint(got["@removed"]) != "map[reason:changed]" {
		t.Errorf("deleted row %v", got)
	}

	// A later round starts from the new deltaLink.
	if rows, _, _ := deltaRound(t, e, next); len(rows) != 0 {
		t.Fatalf("round after catching up: %v", rows)
	}
}

func TestUserDeltaOptions(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)

	t.Run("latest starts from now", func(t *testing.T) {
		rows, _, link := deltaRound(t, e, "/v1.0/users/delta?$deltatoken=latest&$select=id,accountEnabled")
		if len(rows) != 0 {
			t.Fatalf("latest returned %v", rows)
		}
		e.srv.PutUser(User{ID: synced.ID, UserPrincipalName: synced.UserPrincipalName, OnPremisesSyncEnabled: true}) // accountEnabled false
		rows, _, _ = deltaRound(t, e, link)
		if !slices.Equal(rowIDs(rows), []string{synced.ID}) || rows[0]["accountEnabled"] != false {
			t.Fatalf("after latest: %v", rows)
		}
	})
	t.Run("id filter", func(t *testing.T) {
		rows, _, _ := deltaRound(t, e, "/v1.0/users/delta?$filter="+url.QueryEscape("id eq '"+cloud.ID+"'"))
		if !slices.Equal(rowIDs(rows), []string{cloud.ID}) {
			t.Fatalf("filtered round %v", rows)
		}
	})
	t.Run("other filters are refused", func(t *testing.T) {
		wantError(t, e.do("GET", "/v1.0/users/delta?$filter="+url.QueryEscape("displayName eq 'x'"), nil), 400, codeUnsupportedQuery)
	})
	t.Run("garbage token", func(t *testing.T) {
		wantError(t, e.do("GET", "/v1.0/users/delta?$deltatoken=%21%21", nil), 400, codeBadRequest)
	})
	t.Run("expired tokens", func(t *testing.T) {
		_, _, link := deltaRound(t, e, "/v1.0/users/delta")
		r := e.do("GET", "/v1.0/users/delta", nil, "Prefer", "odata.maxpagesize=1")
		skip := strings.TrimPrefix(r.json["@odata.nextLink"].(string), e.srv.URL())
		e.srv.ExpireDeltaTokens()
		// Identity resources answer 400 syncStateNotFound (devblogs, "Duration
		// of change tracking tokens for identity and education resources").
		wantError(t, e.do("GET", link, nil), 400, "syncStateNotFound")
		wantError(t, e.do("GET", skip, nil), 400, "syncStateNotFound")
		// A new first round works again.
		if rows, _, _ := deltaRound(t, e, "/v1.0/users/delta"); len(rows) != 2 {
			t.Fatalf("full resync gave %d rows", len(rows))
		}
	})
	t.Run("expired tokens, 410 switch", func(t *testing.T) {
		gone := newEnv(t, Options{ExpiredDeltaGone: true})
		_, _, link := deltaRound(t, gone, "/v1.0/users/delta")
		gone.srv.ExpireDeltaTokens()
		wantError(t, gone.do("GET", link, nil), 410, "resyncRequired")
	})
}

func TestDeleteUser(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	e.srv.PutGroup("g", "G")
	if err := e.srv.AddGroupMember("g", cloud.ID); err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do("DELETE", "/v1.0/users/"+synced.ID, nil), 400, codeBadRequest) // on-prem mastered
	wantStatus(t, e.do("DELETE", "/v1.0/users/"+cloud.UserPrincipalName, nil), 204)
	if _, ok := e.srv.User(cloud.ID); ok {
		t.Fatal("user still there")
	}
	if m := e.srv.GroupMembers("g"); len(m) != 0 {
		t.Fatalf("deleted user still a member: %v", m)
	}
	wantError(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 404, codeNotFound)
	if !e.srv.DeleteUser(synced.UserPrincipalName) || e.srv.DeleteUser(synced.ID) {
		t.Fatal("DeleteUser: want true, then false")
	}
}
