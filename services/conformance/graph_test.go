package conformance

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/graph"
)

// fakeBatcher answers $batch items by URL prefix; unknown URLs get 404.
type fakeBatcher map[string]graph.BatchResponse

func (f fakeBatcher) Batch(_ context.Context, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	out := make([]graph.BatchResponse, len(reqs))
	for i, r := range reqs {
		out[i] = graph.BatchResponse{ID: r.ID, Status: 404, Err: &graph.Error{Status: 404, Code: "Request_ResourceNotFound"}}
		for prefix, res := range f {
			if strings.HasPrefix(r.URL, prefix) {
				res.ID = r.ID
				out[i] = res
			}
		}
	}
	return out, nil
}

func ok(body string) graph.BatchResponse {
	return graph.BatchResponse{Status: 200, Body: json.RawMessage(body)}
}

func denied() graph.BatchResponse {
	return graph.BatchResponse{Status: 403, Err: &graph.Error{Status: http.StatusForbidden, Code: graph.CodeAuthDenied, Message: "Insufficient privileges to complete the operation."}}
}

// TestDirectoryRole judges the app's role assignments as real Graph
// returns them (the simulator serves no /roleManagement).
func TestDirectoryRole(t *testing.T) {
	const sp = "/servicePrincipals(appId='app')"
	const ra = "/roleManagement/directory/roleAssignments"
	spOK := ok(`{"id":"sp-1","appId":"app"}`)
	assignment := func(template, name, scope string) string {
		return `{"principalId":"sp-1","directoryScopeId":"` + scope + `","roleDefinition":{"displayName":"` + name + `","templateId":"` + template + `"}}`
	}
	userAdmin := assignment("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", "/")
	tests := []struct {
		name string
		b    fakeBatcher
		want Status
	}{
		{"user administrator", fakeBatcher{sp: spOK, ra: ok(`{"value":[` + userAdmin + `]}`)}, Pass},
		{"privileged authentication administrator", fakeBatcher{sp: spOK, ra: ok(`{"value":[` +
			assignment("7be44c8a-adaf-4e2a-84d6-ab2649e08a13", "Privileged Authentication Administrator", "/") + `]}`)}, Pass},
		{"no role", fakeBatcher{sp: spOK, ra: ok(`{"value":[]}`)}, Fail},
		{"a role that cannot reset", fakeBatcher{sp: spOK, ra: ok(`{"value":[` +
			assignment("88d8e3e3-8f55-4a1e-953a-9b9898b8876b", "Directory Readers", "/") + `]}`)}, Fail},
		{"user administrator of one administrative unit", fakeBatcher{sp: spOK, ra: ok(`{"value":[` +
			assignment("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", "/administrativeUnits/au-1") + `]}`)}, Fail},
		{"service principal not readable", fakeBatcher{sp: denied()}, Skip},
		{"assignments not readable", fakeBatcher{sp: spOK, ra: denied()}, Skip},
		{"endpoint missing", fakeBatcher{}, Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gr := &graphRun{runner: &runner{}, g: &Graph{Batcher: tt.b, ClientID: "app"}}
			gr.directoryRole(context.Background())
			if len(gr.results) != 1 || gr.results[0].Status != tt.want {
				t.Fatalf("results %+v, want one %s", gr.results, tt.want)
			}
		})
	}
}
