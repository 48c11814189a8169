package graphsim

import (
	"slices"
	"strings"
	"testing"
)

func TestGroupMembers(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	e.srv.PutGroup("11111111-aaaa-0000-0000-000000000001", "Password change pending")
	gid := "11111111-aaaa-0000-0000-000000000001"
	ref := func(id string) map[string]any {
		return map[string]any{"@odata.id": e.srv.GraphBaseURL() + "/directoryObjects/" + id}
	}
	onHost := func(base, id string) map[string]any {
		return map[string]any{"@odata.id": base + "/directoryObjects/" + id}
	}
	localhost := strings.Replace(e.srv.GraphBaseURL(), "127.0.0.1", "localhost", 1)
	steps := []struct {
		name        string
		method      string
		path        string
		body        any
		wantStatus  int
		wantCode    string
		wantMessage string
		wantMembers []string
	}{
		{"add", "POST", "/v1.0/groups/" + gid + "/members/$ref", ref(synced.ID), 204, "", "", []string{synced.ID}},
		{"add again", "POST", "/v1.0/groups/" + gid + "/members/$ref", ref(synced.ID), 400, codeBadRequest,
			"One or more added object references already exist for the following modified properties: 'members'.", []string{synced.ID}},
		// The reference must name the Graph host the request came to.
		{"add naming graph.microsoft.com", "POST", "/v1.0/groups/" + gid + "/members/$ref", onHost("https://graph.microsoft.com/v1.0", cloud.ID), 400, codeBadRequest, "", []string{synced.ID}},
		{"add naming another host of the same server", "POST", "/v1.0/groups/" + gid + "/members/$ref", onHost(localhost, cloud.ID), 400, codeBadRequest, "", []string{synced.ID}},
		{"add with a relative reference", "POST", "/v1.0/groups/" + gid + "/members/$ref", onHost("/v1.0", cloud.ID), 400, codeBadRequest, "", []string{synced.ID}},
		{"add outside /v1.0", "POST", "/v1.0/groups/" + gid + "/members/$ref", onHost(e.srv.URL(), cloud.ID), 400, codeBadRequest, "", []string{synced.ID}},
		{"add by users URL on the simulator's host", "POST", "/v1.0/groups/" + gid + "/members/$ref",
			map[string]any{"@odata.id": e.srv.GraphBaseURL() + "/users/" + cloud.ID}, 204, "", "", []string{cloud.ID, synced.ID}},
		{"add unknown user", "POST", "/v1.0/groups/" + gid + "/members/$ref", ref("cccccccc-0000-0000-0000-000000000000"), 404, codeNotFound, "", []string{cloud.ID, synced.ID}},
		{"add without @odata.id", "POST", "/v1.0/groups/" + gid + "/members/$ref", map[string]any{"id": cloud.ID}, 400, codeBadRequest, "", []string{cloud.ID, synced.ID}},
		{"add to unknown group", "POST", "/v1.0/groups/nope/members/$ref", ref(cloud.ID), 404, codeNotFound, "", []string{cloud.ID, synced.ID}},
		{"remove", "DELETE", "/v1.0/groups/" + gid + "/members/" + synced.ID + "/$ref", nil, 204, "", "", []string{cloud.ID}},
		{"remove non-member", "DELETE", "/v1.0/groups/" + gid + "/members/" + synced.ID + "/$ref", nil, 404, codeNotFound, "", []string{cloud.ID}},
		{"remove from unknown group", "DELETE", "/v1.0/groups/nope/members/" + cloud.ID + "/$ref", nil, 404, codeNotFound, "", []string{cloud.ID}},
	}
	for _, st := range steps { // in order: each step builds on the previous
		r := e.do(st.method, st.path, st.body)
		if st.wantCode != "" {
			wantError(t, r, st.wantStatus, st.wantCode)
			if st.wantMessage != "" && r.errorMessage() != st.wantMessage {
				t.Fatalf("%s: message %q", st.name, r.errorMessage())
			}
		} else {
			wantStatus(t, r, st.wantStatus)
		}
		if got := e.srv.GroupMembers(gid); !slices.Equal(got, st.wantMembers) {
			t.Fatalf("%s: members %v, want %v", st.name, got, st.wantMembers)
		}
	}

	r := e.do("GET", "/v1.0/groups/"+gid+"/members?$select=id,userPrincipalName", nil)
	wantStatus(t, r, 200)
	v := r.json["value"].([]any)
	if len(v) != 1 || v[0].(map[string]any)["userPrincipalName"] != cloud.UserPrincipalName || v[0].(map[string]any)["@odata.type"] != "#microsoft.graph.user" {
		t.Fatalf("members list %s", r.raw)
	}
	if r := e.do("GET", "/v1.0/groups/"+gid, nil); r.json["displayName"] != "Password change pending" {
		t.Fatalf("group %s", r.raw)
	}
}
