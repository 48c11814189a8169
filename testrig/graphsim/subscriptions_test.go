package graphsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is a webhook endpoint under test control.
type receiver struct {
	mu          sync.Mutex
	validations []*http.Request
	posts       [][]byte
	// answer decides how validation requests are answered: "ok", "encoded"
	// (echo the still-encoded token), "status" (202), "json" (wrong type).
	answer string
	// failures is how many notification POSTs to answer 503 first.
	failures int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.URL.Query().Has("validationToken") {
		rc.validations = append(rc.validations, r)
		tok := r.URL.Query().Get("validationToken")
		switch rc.answer {
		case "encoded":
			tok = url.QueryEscape(tok)
		case "status":
			w.WriteHeader(http.StatusAccepted)
			return
		case "json":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, tok)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, tok)
		return
	}
	b, _ := io.ReadAll(r.Body)
	if rc.failures > 0 {
		rc.failures--
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rc.posts = append(rc.posts, b)
	w.WriteHeader(http.StatusAccepted)
}

// notes waits for at least n notifications and returns them all.
func (rc *receiver) notes(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc.mu.Lock()
		var out []map[string]any
		for _, p := range rc.posts {
			var c struct{ Value []map[string]any }
			if err := json.Unmarshal(p, &c); err != nil {
				t.Fatalf("notification body %s: %v", p, err)
			}
			out = append(out, c.Value...)
		}
		rc.mu.Unlock()
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				t.Fatalf("%d notifications, want %d", len(out), n)
			}
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newReceiverEnv(t *testing.T, opts Options) (*env, *receiver, *httptest.Server) {
	t.Helper()
	rc := &receiver{answer: "ok"}
	ts := httptest.NewTLSServer(rc)
	t.Cleanup(ts.Close)
	opts.NotificationClient = ts.Client()
	return newEnv(t, opts), rc, ts
}

func subBody(notify string, mut func(map[string]any)) map[string]any {
	b := map[string]any{
		"changeType":         "updated,deleted",
		"notificationUrl":    notify,
		"resource":           "/users",
		"expirationDateTime": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339Nano),
		"clientState":        "secret-state",
	}
	if mut != nil {
		mut(b)
	}
	return b
}

func TestCreateSubscription(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{})
	r := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook?tenant=a", func(b map[string]any) {
		b["lifecycleNotificationUrl"] = ts.URL + "/lifecycle"
	}))
	wantStatus(t, r, 201)
	for k, v := range map[string]any{"resource": "/users", "changeType": "updated,deleted", "clientState": "secret-state",
		"applicationId": e.srv.ClientID(), "notificationUrl": ts.URL + "/hook?tenant=a", "lifecycleNotificationUrl": ts.URL + "/lifecycle",
		"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity"} {
		if r.json[k] != v {
			t.Errorf("%s = %v, want %v", k, r.json[k], v)
		}
	}
	if len(rc.validations) != 2 {
		t.Fatalf("%d validation requests, want 2 (notification and lifecycle URLs)", len(rc.validations))
	}
	v := rc.validations[0]
	if v.Method != "POST" || v.URL.Path != "/hook" || v.URL.Query().Get("tenant") != "a" ||
		!strings.HasPrefix(v.Header.Get("Content-Type"), "text/plain") || !strings.Contains(v.URL.Query().Get("validationToken"), " ") {
		t.Fatalf("validation request %s %s %v", v.Method, v.URL, v.Header)
	}
	if subs := e.srv.Subscriptions(); len(subs) != 1 || subs[0].ID != r.json["id"] {
		t.Fatalf("Subscriptions() %+v", subs)
	}
	// The same changeType and resource again: 409.
	wantError(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/other", nil)), 409, codeExtension)
}

func TestCreateSubscriptionRefused(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		mut    func(b map[string]any, ts string)
		want   int
		code   string
	}{
		{"endpoint echoes the encoded token", "encoded", nil, 400, codeValidation},
		{"endpoint answers 202", "status", nil, 400, codeValidation},
		{"endpoint answers JSON", "json", nil, 400, codeValidation},
		{"unreachable endpoint", "ok", func(b map[string]any, _ string) { b["notificationUrl"] = "https://127.0.0.1:1/hook" }, 400, codeValidation},
		{"http endpoint", "ok", func(b map[string]any, ts string) { b["notificationUrl"] = strings.Replace(ts, "https", "http", 1) }, 400, codeValidation},
		{"created is not supported on users", "ok", func(b map[string]any, _ string) { b["changeType"] = "created,updated" }, 400, codeExtension},
		{"unsupported resource", "ok", func(b map[string]any, _ string) { b["resource"] = "/groups" }, 400, codeExtension},
		{"expiry beyond 41760 minutes", "ok", func(b map[string]any, _ string) {
			b["expirationDateTime"] = time.Now().Add(41761 * time.Minute).UTC().Format(time.RFC3339)
		}, 400, codeExtension},
		{"expiry in the past", "ok", func(b map[string]any, _ string) {
			b["expirationDateTime"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		}, 400, codeExtension},
		{"clientState too long", "ok", func(b map[string]any, _ string) { b["clientState"] = strings.Repeat("x", 129) }, 400, codeExtension},
		{"rich notifications", "ok", func(b map[string]any, _ string) { b["includeResourceData"] = true }, 400, codeExtension},
		{"unknown property", "ok", func(b map[string]any, _ string) { b["notificationUri"] = "x" }, 400, codeExtension},
		{"missing resource", "ok", func(b map[string]any, _ string) { delete(b, "resource") }, 400, codeExtension},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rc, ts := newReceiverEnv(t, Options{})
			rc.answer = tt.answer
			body := subBody(ts.URL+"/hook", nil)
			if tt.mut != nil {
				tt.mut(body, ts.URL+"/hook")
			}
			wantError(t, e.do("POST", "/v1.0/subscriptions", body), tt.want, tt.code)
			if n := len(e.srv.Subscriptions()); n != 0 {
				t.Fatalf("%d subscriptions after a refusal", n)
			}
		})
	}
}

func TestChangeNotifications(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	all := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/all", nil))
	wantStatus(t, all, 201)
	one := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/one", func(b map[string]any) {
		b["resource"] = "users/" + synced.ID
		b["changeType"] = "updated"
	}))
	wantStatus(t, one, 201)
	// "deleted" fires on permanent deletion only: no notification for updates.
	deletedOnly := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/deleted", func(b map[string]any) { b["changeType"] = "deleted" }))
	wantStatus(t, deletedOnly, 201)

	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"displayName": "Changed"}), 204)
	notes := rc.notes(t, 1)
	n := notes[0]
	rd, _ := n["resourceData"].(map[string]any)
	if n["subscriptionId"] != all.json["id"] || n["changeType"] != "updated" || n["clientState"] != "secret-state" ||
		n["resource"] != "Users/"+cloud.ID || n["tenantId"] != e.srv.TenantID() || rd["id"] != cloud.ID ||
		rd["@odata.type"] != "#Microsoft.Graph.User" || rd["organizationId"] != e.srv.TenantID() || n["subscriptionExpirationDateTime"] == nil {
		t.Fatalf("notification %v", n)
	}

	// A change to the synced user reaches both subscriptions; a write that
	// changes nothing notifies nobody.
	wantStatus(t, e.do("POST", "/v1.0/users/"+synced.ID+"/revokeSignInSessions", nil), 200)
	notes = rc.notes(t, 3)
	got := map[any]int{}
	for _, n := range notes[1:] {
		if n["resource"] != "Users/"+synced.ID {
			t.Errorf("notification %v", n)
		}
		got[n["subscriptionId"]]++
	}
	if got[all.json["id"]] != 1 || got[one.json["id"]] != 1 {
		t.Fatalf("per subscription %v", got)
	}
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"displayName": "Changed"}), 204)
	time.Sleep(100 * time.Millisecond)
	if n := len(rc.notes(t, 3)); n != 3 {
		t.Fatalf("%d notifications after a no-op write", n)
	}
	for _, n := range rc.notes(t, 3) {
		if n["subscriptionId"] == deletedOnly.json["id"] {
			t.Fatalf("a deleted-only subscription was notified of an update: %v", n)
		}
	}
}

func TestNotificationRetries(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	rc.mu.Lock()
	rc.failures = 2
	rc.mu.Unlock()
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"displayName": "Retried"}), 204)
	if notes := rc.notes(t, 1); notes[0]["resource"] != "Users/"+cloud.ID {
		t.Fatalf("notification %v", notes[0])
	}
	d := e.srv.Deliveries()
	if len(d) != 3 || d[0].Status != 503 || d[1].Status != 503 || d[2].Status != 202 || d[2].Attempt != 3 {
		t.Fatalf("deliveries %v", d)
	}
}

func TestSubscriptionLifecycle(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{})
	r := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", func(b map[string]any) { b["lifecycleNotificationUrl"] = ts.URL + "/lc" }))
	wantStatus(t, r, 201)
	id := r.json["id"].(string)
	path := "/v1.0/subscriptions/" + id

	renewTo := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r = e.do("PATCH", path, map[string]any{"expirationDateTime": renewTo.Format(time.RFC3339)})
	wantStatus(t, r, 200)
	if r.json["expirationDateTime"] != renewTo.Format(graphTimeLayout) {
		t.Fatalf("renewed to %v", r.json["expirationDateTime"])
	}
	wantError(t, e.do("PATCH", path, map[string]any{"lifecycleNotificationUrl": ts.URL + "/x"}), 400, codeExtension)
	wantStatus(t, e.do("POST", path+"/reauthorize", nil), 204)
	if s := e.srv.Subscriptions(); s[0].Reauthorized.IsZero() {
		t.Fatal("reauthorize not recorded")
	}
	r = e.do("GET", "/v1.0/subscriptions", nil)
	if v := r.json["value"].([]any); len(v) != 1 {
		t.Fatalf("list %s", r.raw)
	}

	if !e.srv.SendLifecycleNotification(id, "reauthorizationRequired") {
		t.Fatal("SendLifecycleNotification refused")
	}
	n := rc.notes(t, 1)[0]
	if n["lifecycleEvent"] != "reauthorizationRequired" || n["subscriptionId"] != id || n["clientState"] != "secret-state" {
		t.Fatalf("lifecycle notification %v", n)
	}
	if !e.srv.RemoveSubscription(id, true) {
		t.Fatal("RemoveSubscription refused")
	}
	if n := rc.notes(t, 2)[1]; n["lifecycleEvent"] != "subscriptionRemoved" {
		t.Fatalf("removal notification %v", n)
	}
	wantError(t, e.do("GET", path, nil), 404, codeSubNotFound)
	wantError(t, e.do("DELETE", path, nil), 404, codeSubNotFound)
}

func TestSubscriptionExpiresAndDeletes(t *testing.T) {
	e, _, ts := newReceiverEnv(t, Options{})
	short := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/a", func(b map[string]any) {
		b["expirationDateTime"] = time.Now().Add(300 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	}))
	wantStatus(t, short, 201)
	long := e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/b", func(b map[string]any) { b["resource"] = "users/x" }))
	wantStatus(t, long, 201)
	time.Sleep(400 * time.Millisecond)
	wantError(t, e.do("GET", "/v1.0/subscriptions/"+short.json["id"].(string), nil), 404, codeSubNotFound)
	wantStatus(t, e.do("DELETE", "/v1.0/subscriptions/"+long.json["id"].(string), nil), 204)
	if s := e.srv.Subscriptions(); len(s) != 0 {
		t.Fatalf("left %+v", s)
	}
}

func TestHTTPNotificationURLOption(t *testing.T) {
	rc := &receiver{answer: "ok"}
	ts := httptest.NewServer(rc)
	defer ts.Close()
	e := newEnv(t, Options{AllowHTTPNotificationURL: true, NotificationDelay: 50 * time.Millisecond})
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	start := time.Now()
	e.srv.PutUser(User{UserPrincipalName: "new@contoso.com"})
	rc.notes(t, 1)
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("NotificationDelay not applied")
	}
}
