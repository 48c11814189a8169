package msgraph_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// Transitive members and the user list page through nextLinks (999 per
// page), and batch items carry their headers and bodies.
func TestDirectoryAndBatchBodies(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	c := newClient(t, s, nil)
	s.PutGroup("g-top", "top")
	s.PutGroup("g-sub", "sub")
	if err := s.AddNestedGroup("g-top", "g-sub"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 1200 {
		id := fmt.Sprintf("dddddddd-%04d-4000-8000-000000000000", i)
		s.PutUser(graphsim.User{ID: id, UserPrincipalName: fmt.Sprintf("d%04d@example.com", i), AccountEnabled: true})
		if err := s.AddGroupMember([]string{"g-top", "g-sub"}[i%2], id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	members, err := c.TransitiveGroupMembers(ctx(t), "g-top")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range members {
		got = append(got, u.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("transitive members: %d, want %d", len(got), len(want))
	}
	all, err := c.ListUsers(ctx(t))
	if err != nil || len(all) != 1200 || !all[0].AccountEnabled {
		t.Fatalf("ListUsers: %d users, %v", len(all), err)
	}
	if _, err := c.TransitiveGroupMembers(ctx(t), "nope"); !graph.IsNotFound(err) {
		t.Fatalf("unknown group: %v", err)
	}

	res, err := c.Batch(ctx(t), []graph.BatchRequest{
		{ID: "1", Method: "GET", URL: "/users/" + want[0] + "?$select=" + graph.UserSelect},
		{ID: "2", Method: "PATCH", URL: "/users/" + want[1], Body: map[string]any{"passwordProfile": map[string]any{"forceChangePasswordNextSignIn": true}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var u graph.UserJSON
	if err := json.Unmarshal(res[0].Body, &u); err != nil || u.User().ID != want[0] || u.User().UPN != "d0000@example.com" {
		t.Fatalf("GET item body %s: %v", res[0].Body, err)
	}
	if res[1].Status != 204 || res[1].Headers["x-ms-resource-unit"] != "1" {
		t.Fatalf("PATCH item: %+v", res[1])
	}
}
