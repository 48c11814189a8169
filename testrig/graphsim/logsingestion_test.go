package graphsim

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogsIngestionAPI: the documented request shape and errors of the
// Azure Monitor Logs Ingestion API.
func TestLogsIngestionAPI(t *testing.T) {
	e := newEnv(t, Options{})
	const dcr, stream = "dcr-00112233445566778899aabbccddeeff", "Custom-PwsyncAudit_CL"
	li := e.srv.LogsIngestion()
	li.AddRule(dcr, stream)
	form := secretForm(e.srv.ClientID(), testSecret)
	form.Set("scope", "https://monitor.azure.com/.default")
	code, tok := e.tokenForm(form)
	if code != http.StatusOK {
		t.Fatalf("monitor token: %d %v", code, tok)
	}
	monitor := tok["access_token"].(string)
	post := func(token, path, ctype, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL()+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	path := "/dataCollectionRules/" + dcr + "/streams/" + stream + "?api-version=2023-01-01"
	rows := `[{"TimeGenerated":"2026-03-10T12:00:00Z","Kind":"step"},{"TimeGenerated":"2026-03-10T12:00:01Z","Kind":"action"}]`
	big := "[" + strings.Repeat(`{"Detail":"`+strings.Repeat("x", 1000)+`"},`, 1100) + "{}]"
	cases := []struct {
		name, token, path, ctype, body string
		want                           int
	}{
		{"accepted", monitor, path, "application/json", rows, http.StatusNoContent},
		{"no token", "", path, "application/json", rows, http.StatusUnauthorized},
		{"a Graph token", e.token, path, "application/json", rows, http.StatusUnauthorized},
		{"no api-version", monitor, strings.TrimSuffix(path, "?api-version=2023-01-01"), "application/json", rows, http.StatusBadRequest},
		{"unknown rule", monitor, strings.Replace(path, dcr, "dcr-ffffffffffffffffffffffffffffffff", 1), "application/json", rows, http.StatusNotFound},
		{"not an array", monitor, path, "application/json", `{"Kind":"step"}`, http.StatusBadRequest},
		{"not JSON", monitor, path, "text/plain", rows, http.StatusUnsupportedMediaType},
		{"above 1 MB", monitor, path, "application/json", big, http.StatusRequestEntityTooLarge},
	}
	for _, c := range cases {
		if got := post(c.token, c.path, c.ctype, c.body).StatusCode; got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	li.Throttle(1, 7*time.Second)
	resp := post(monitor, path, "application/json", rows)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("throttled: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if got := li.Rows(dcr, stream); len(got) != 2 || got[1]["Kind"] != "action" {
		t.Errorf("rows: %v", got)
	}
	if li.Calls() != len(cases)+1 || li.Refused(http.StatusUnauthorized) != 2 {
		t.Errorf("calls %d, 401s %d", li.Calls(), li.Refused(http.StatusUnauthorized))
	}
}
