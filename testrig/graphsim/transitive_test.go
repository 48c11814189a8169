package graphsim

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestTransitiveMembersNestedAndPaged(t *testing.T) {
	e := newEnv(t, Options{})
	const parent, child, loop = "g-parent", "g-child", "g-loop"
	for _, g := range []string{parent, child, loop} {
		e.srv.PutGroup(g, g)
	}
	var want []string
	for i := range 5 {
		u := User{UserPrincipalName: fmt.Sprintf("u%d@example.com", i), AccountEnabled: true}
		e.srv.PutUser(u)
		got, _ := e.srv.User(u.UserPrincipalName)
		want = append(want, got.ID)
		g := parent
		if i >= 2 {
			g = child
		}
		if err := e.srv.AddGroupMember(g, got.ID); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(want)
	// parent -> child -> loop -> parent: a cycle is followed once.
	for _, p := range [][2]string{{parent, child}, {child, loop}, {loop, parent}} {
		if err := e.srv.AddNestedGroup(p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.srv.AddNestedGroup(parent, "nope"); err == nil {
		t.Fatal("nesting an unknown group: no error")
	}

	for _, path := range []string{"/transitiveMembers", "/transitiveMembers/microsoft.graph.user"} {
		var got []string
		next := "/v1.0/groups/" + parent + path + "?$select=id,userPrincipalName&$top=2"
		pages := 0
		for next != "" {
			r := e.do("GET", next, nil)
			wantStatus(t, r, 200)
			pages++
			for _, v := range r.json["value"].([]any) {
				got = append(got, v.(map[string]any)["id"].(string))
			}
			next = ""
			if nl, ok := r.json["@odata.nextLink"].(string); ok {
				u, err := url.Parse(nl)
				if err != nil || !strings.HasSuffix(u.Path, path) {
					t.Fatalf("nextLink %q does not stay on %s", nl, path)
				}
				next = u.RequestURI()
			}
		}
		if !slices.Equal(got, want) || pages != 3 {
			t.Fatalf("%s: got %v in %d pages, want %v in 3", path, got, pages, want)
		}
	}
	wantError(t, e.do("GET", "/v1.0/groups/nope/transitiveMembers", nil), 404, codeNotFound)
	wantError(t, e.do("GET", "/v1.0/groups/"+parent+"/transitiveMembers?$top=0", nil), 400, codeBadRequest)
}
