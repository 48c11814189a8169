package graphsim

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// batchResponses decodes a $batch answer into items by id.
func batchResponses(t *testing.T, r resp) map[string]map[string]any {
	t.Helper()
	wantStatus(t, r, 200)
	out := map[string]map[string]any{}
	for _, it := range r.json["responses"].([]any) {
		m := it.(map[string]any)
		out[m["id"].(string)] = m
	}
	return out
}

func itemStatus(item map[string]any) int { return int(item["status"].(float64)) }

func itemErrorCode(item map[string]any) string {
	b, _ := item["body"].(map[string]any)
	e, _ := b["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestBatchMixed(t *testing.T) {
	// Item 2's flag-only PATCH must take effect to show items run as
	// standalone requests do (the no-op default is TestForceChangeNoop's).
	e := newEnv(t, Options{ForceChangeApplies: true})
	cloud, synced := seedUsers(e.srv)
	e.srv.PutGroup("g1", "Pending")
	body := fmt.Sprintf(`{"requests":[
	 {"id":"1","method":"GET","url":"users/%[1]s?$select=id,passwordProfile","body":null,"headers":null},
	 {"id":"2","method":"PATCH","url":"https://graph.microsoft.com/v1.0/users/%[1]s","headers":{"Content-Type":"application/json"},
	  "body":{"passwordProfile":{"forceChangePasswordNextSignIn":true}}},
	 {"id":"3","method":"POST","url":"/users/%[2]s/revokeSignInSessions","headers":{"content-type":"application/json"},"body":{},"dependsOn":["2"]},
	 {"id":"4","method":"PATCH","url":"/users/%[2]s","headers":{"Content-Type":"application/json"},
	  "body":{"passwordProfile":{"forceChangePasswordNextSignIn":true}}},
	 {"id":"5","method":"POST","url":"/groups/g1/members/$ref","headers":{"Content-Type":"application/json"},
	  "body":{"@odata.id":"https://graph.microsoft.com/v1.0/directoryObjects/%[2]s"},"dependsOn":["4"]},
	 {"id":"6","method":"GET","url":"/users/ghost@contoso.com"},
	 {"id":"7","method":"DELETE","url":"/groups/g1/members/%[1]s/$ref"}
	]}`, cloud.ID, synced.ID)
	e.srv.ResetRequests()
	items := batchResponses(t, e.do("POST", "/v1.0/$batch", []byte(body)))

	want := map[string]struct {
		status int
		code   string
	}{
		"1": {200, ""}, "2": {204, ""}, "3": {200, ""}, "4": {400, codeBadRequest},
		"5": {424, codeFailedDependency}, "6": {404, codeNotFound}, "7": {404, codeNotFound},
	}
	if len(items) != len(want) {
		t.Fatalf("%d responses, want %d", len(items), len(want))
	}
	for id, w := range want {
		it := items[id]
		if itemStatus(it) != w.status || itemErrorCode(it) != w.code {
			t.Errorf("item %s: status %d code %q, want %d %q: %v", id, itemStatus(it), itemErrorCode(it), w.status, w.code, it)
		}
	}
	// The GET item has the standalone shape, headers included.
	get := items["1"]
	if _, ok := get["body"].(map[string]any)["passwordProfile"]; !ok {
		t.Errorf("item 1 body %v", get["body"])
	}
	if h := get["headers"].(map[string]any); !strings.HasPrefix(h["Content-Type"].(string), "application/json") || h["x-ms-resource-unit"] != "1" {
		t.Errorf("item 1 headers %v", h)
	}
	if _, hasBody := items["2"]["body"]; hasBody {
		t.Errorf("204 item has a body: %v", items["2"])
	}
	// Effects: as if sent standalone.
	if !e.user(cloud.ID).ForceChangePasswordNextSignIn {
		t.Error("item 2 did not set the flag")
	}
	if e.user(synced.ID).SignInSessionsValidFromDateTime.IsZero() {
		t.Error("item 3 did not revoke")
	}
	if len(e.srv.GroupMembers("g1")) != 0 {
		t.Error("item 5 ran although its dependency failed")
	}

	// Log: one entry per item plus the outer POST, all with the batch's ID.
	reqs := e.srv.Requests()
	if len(reqs) != 8 {
		t.Fatalf("%d log entries, want 8", len(reqs))
	}
	outer := reqs[len(reqs)-1]
	if outer.Path != "/v1.0/$batch" || outer.ItemID != "" || outer.BatchID == "" || outer.Status != 200 {
		t.Fatalf("outer entry %+v", outer)
	}
	byItem := map[string]Request{}
	for _, r := range reqs[:7] {
		if r.BatchID != outer.BatchID {
			t.Errorf("item %s BatchID %q, want %q", r.ItemID, r.BatchID, outer.BatchID)
		}
		byItem[r.ItemID] = r
	}
	if r := byItem["1"]; r.Method != "GET" || r.Path != "/v1.0/users/"+cloud.ID || r.Query != "$select=id,passwordProfile" || r.Status != 200 || r.Body != nil {
		t.Errorf("item 1 entry %+v", r)
	}
	if r := byItem["2"]; r.Path != "/v1.0/users/"+cloud.ID || string(r.Body) != `{"passwordProfile":{"forceChangePasswordNextSignIn":true}}` {
		t.Errorf("item 2 entry %+v body %s", r, r.Body)
	}
	if r := byItem["5"]; r.Status != 424 {
		t.Errorf("item 5 entry %+v", r)
	}
}

func TestBatchRefusedAsAWhole(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	get := func(id string) map[string]any {
		return map[string]any{"id": id, "method": "GET", "url": "/users/" + cloud.ID}
	}
	many := map[string]any{"requests": func() []any {
		var out []any
		for i := range 21 {
			out = append(out, get(fmt.Sprint(i)))
		}
		return out
	}()}
	twenty := map[string]any{"requests": many["requests"].([]any)[:20]}
	tests := []struct {
		name string
		body any
		want int
	}{
		{"21 requests", many, 400},
		{"20 requests is fine", twenty, 200},
		{"write without Content-Type", map[string]any{"requests": []any{map[string]any{"id": "1", "method": "PATCH", "url": "/users/" + cloud.ID, "body": map[string]any{"displayName": "x"}}}}, 400},
		{"write without body", map[string]any{"requests": []any{map[string]any{"id": "1", "method": "POST", "url": "/users/" + cloud.ID + "/revokeSignInSessions", "headers": map[string]any{"Content-Type": "application/json"}}}}, 400},
		{"dependsOn a later request", map[string]any{"requests": []any{
			map[string]any{"id": "1", "method": "GET", "url": "/users/" + cloud.ID, "dependsOn": []string{"2"}}, get("2")}}, 400},
		{"duplicate ids ignore case", map[string]any{"requests": []any{get("a"), get("A")}}, 400},
		{"no requests", map[string]any{"requests": []any{}}, 400},
		{"not JSON", []byte(`{"requests":[`), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.srv.ResetRequests()
			r := e.do("POST", "/v1.0/$batch", tt.body)
			if tt.want == 200 {
				items := batchResponses(t, r)
				if len(items) != 20 {
					t.Fatalf("%d items", len(items))
				}
				return
			}
			wantError(t, r, tt.want, codeODataBadRequest)
			if n := len(e.srv.Requests()); n != 1 {
				t.Fatalf("%d log entries: items ran although the batch was refused", n)
			}
		})
	}
	if e.user(cloud.ID).DisplayName != cloud.DisplayName {
		t.Fatal("a refused batch wrote")
	}
}

func TestBatchBodyShapes(t *testing.T) {
	// The SDK sends "body": null on GET items; relative URLs come with and
	// without a leading slash; response ids match request ids verbatim.
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	for _, u := range []string{"users/" + cloud.ID, "/users/" + cloud.ID, e.srv.GraphBaseURL() + "/users/" + cloud.ID} {
		body := fmt.Sprintf(`{"requests":[{"id":"Abc","method":"get","url":%q,"body":null,"headers":{}}]}`, u)
		items := batchResponses(t, e.do("POST", "/v1.0/$batch", []byte(body)))
		it, ok := items["Abc"]
		if !ok || itemStatus(it) != 200 {
			t.Fatalf("url %q: %v", u, items)
		}
	}
	raw := e.do("POST", "/v1.0/$batch", []byte(`{"requests":[{"id":"1","method":"GET","url":"/v1.0/nope"}]}`))
	var out struct {
		Responses []batchResponseItem `json:"responses"`
	}
	if err := json.Unmarshal(raw.raw, &out); err != nil || out.Responses[0].Status != 400 {
		t.Fatalf("unknown segment item: %s", raw.raw)
	}
}
