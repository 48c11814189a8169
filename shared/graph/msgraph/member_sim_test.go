package msgraph_test

import (
	"testing"

	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestIsGroupMember: checkMemberGroups answers for direct and nested
// membership, and no for a user outside the group.
func TestIsGroupMember(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	c := newClient(t, s, nil)
	const outer, inner = "aaaaaaaa-0000-4000-8000-0000000000a1", "aaaaaaaa-0000-4000-8000-0000000000a2"
	s.PutGroup(outer, "Pending")
	s.PutGroup(inner, "Pending EMEA")
	if err := s.AddNestedGroup(outer, inner); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u-direct", "u-nested", "u-out"} {
		s.PutUser(graphsim.User{ID: id, UserPrincipalName: id + "@contoso.com", AccountEnabled: true})
	}
	if err := s.AddGroupMember(outer, "u-direct"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddGroupMember(inner, "u-nested"); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"u-direct": true, "u-nested": true, "u-out": false} {
		got, err := c.IsGroupMember(ctx(t), outer, id)
		if err != nil || got != want {
			t.Errorf("IsGroupMember(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
	if _, err := c.IsGroupMember(ctx(t), outer, "nobody"); err == nil {
		t.Error("an unknown user: want Graph's 404")
	}
}
