package graphsim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	get := func(id string) int { return e.do("GET", "/v1.0/users/"+id, nil).status }
	patch := func(id string) int {
		return e.do("PATCH", "/v1.0/users/"+id, map[string]any{"passwordPolicies": "None"}).status
	}
	tests := []struct {
		name  string
		fault Fault
		calls func() []int
		want  []int
	}{
		{"count limits the fault", Fault{Status: 503, Count: 2},
			func() []int { return []int{get(cloud.ID), get(cloud.ID), get(cloud.ID)} }, []int{503, 503, 200}},
		{"method filter", Fault{Method: "patch", Status: 500, Count: 1},
			func() []int { return []int{get(cloud.ID), patch(cloud.ID), patch(cloud.ID)} }, []int{200, 500, 204}},
		{"path prefix filter", Fault{PathPrefix: "/v1.0/users/" + synced.ID, Status: 504, Count: 1},
			func() []int { return []int{get(cloud.ID), get(synced.ID), get(synced.ID)} }, []int{200, 504, 200}},
		{"forever until cleared", Fault{Status: 502, Count: -1},
			func() []int {
				out := []int{get(cloud.ID), get(cloud.ID), get(cloud.ID)}
				e.srv.ClearFaults()
				return append(out, get(cloud.ID))
			}, []int{502, 502, 502, 200}},
		{"zero count injects nothing", Fault{Status: 500},
			func() []int { return []int{get(cloud.ID)} }, []int{200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.srv.ClearFaults()
			e.srv.InjectFault(tt.fault)
			got := tt.calls()
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("statuses %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFaultShapes(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)

	t.Run("429 with Retry-After and envelope", func(t *testing.T) {
		e.srv.InjectFault(Fault{Status: 429, RetryAfter: 1500 * time.Millisecond, Count: 1})
		r := e.do("GET", "/v1.0/users/"+cloud.ID, nil)
		wantError(t, r, 429, codeTooManyRequests)
		if r.header.Get("Retry-After") != "2" {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
	})
	t.Run("custom body", func(t *testing.T) {
		e.srv.InjectFault(Fault{Status: 503, Body: `{"error":{"code":"custom","message":"m"}}`, Count: 1})
		r := e.do("GET", "/v1.0/users/"+cloud.ID, nil)
		if r.status != 503 || r.errorCode() != "custom" {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
	t.Run("hang outlasts the client", func(t *testing.T) {
		e.srv.InjectFault(Fault{Hang: 10 * time.Second, Status: 200, Count: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.GraphBaseURL()+"/users/"+cloud.ID, nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		start := time.Now()
		_, err := e.hc.Do(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("hang did not end with the client")
		}
	})
	t.Run("hang without status is a slow answer", func(t *testing.T) {
		e.srv.InjectFault(Fault{Hang: 150 * time.Millisecond, Count: 1})
		start := time.Now()
		wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 200)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("answered after %v", d)
		}
	})
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run("reset over "+proto, func(t *testing.T) {
			hc := e.srv.HTTPClient()
			if proto == "HTTP/1.1" {
				tr := hc.Transport.(*http.Transport)
				tr.ForceAttemptHTTP2 = false
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			e.srv.InjectFault(Fault{Reset: true, Count: 1})
			req, _ := http.NewRequest("GET", e.srv.GraphBaseURL()+"/users/"+cloud.ID, nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			r, err := hc.Do(req)
			if err == nil {
				r.Body.Close()
				t.Fatalf("got %s %d, want a connection error", r.Proto, r.StatusCode)
			}
			// The next request is answered normally.
			r, err = hc.Do(req)
			if err != nil || r.StatusCode != 200 || r.Proto != proto {
				t.Fatalf("after reset: %v %v", err, r)
			}
			r.Body.Close()
		})
	}
	t.Run("token endpoint only with an explicit prefix", func(t *testing.T) {
		e.srv.InjectFault(Fault{PathPrefix: "/" + e.srv.TenantID() + "/oauth2/", Status: 503, Count: 1})
		status, _ := e.tokenForm(secretForm(e.srv.ClientID(), testSecret))
		if status != 503 {
			t.Fatalf("token status %d", status)
		}
		e.srv.InjectFault(Fault{Status: 503, Count: 1}) // empty prefix: Graph only
		if status, _ := e.tokenForm(secretForm(e.srv.ClientID(), testSecret)); status != 200 {
			t.Fatalf("token status %d with a Graph-only fault", status)
		}
		e.srv.ClearFaults()
	})
}

func TestFaultsInBatch(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv)
	e.srv.InjectFault(Fault{PathPrefix: "/v1.0/users/" + synced.ID, Status: 503, RetryAfter: 3 * time.Second, Count: 1})
	e.srv.InjectFault(Fault{PathPrefix: "/v1.0/users/" + cloud.ID + "/revoke", Reset: true, Count: 1})
	body := map[string]any{"requests": []any{
		map[string]any{"id": "1", "method": "GET", "url": "/users/" + synced.ID},
		map[string]any{"id": "2", "method": "POST", "url": "/users/" + cloud.ID + "/revokeSignInSessions", "headers": map[string]string{"Content-Type": "application/json"}, "body": map[string]any{}},
		map[string]any{"id": "3", "method": "GET", "url": "/users/" + cloud.ID},
	}}
	items := batchResponses(t, e.do("POST", "/v1.0/$batch", body))
	if s := itemStatus(items["1"]); s != 503 || items["1"]["headers"].(map[string]any)["Retry-After"] != "3" {
		t.Errorf("item 1: %v", items["1"])
	}
	if s := itemStatus(items["2"]); s != 503 {
		t.Errorf("item 2 (reset): %v", items["2"])
	}
	if s := itemStatus(items["3"]); s != 200 {
		t.Errorf("item 3: %v", items["3"])
	}
	if !e.user(cloud.ID).SignInSessionsValidFromDateTime.IsZero() {
		t.Error("a reset item still revoked")
	}
}

func TestLatency(t *testing.T) {
	e := newEnv(t, Options{Latency: 120 * time.Millisecond})
	cloud, _ := seedUsers(e.srv)
	seen := make(chan Request, 10)
	e.srv.OnRequest(func(r Request) { seen <- r })
	start := time.Now()
	wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 200)
	if d := time.Since(start); d < 120*time.Millisecond {
		t.Fatalf("answered after %v, want >= 120ms", d)
	}
	select {
	case r := <-seen:
		if r.Duration < 120*time.Millisecond || r.Path != "/v1.0/users/"+cloud.ID {
			t.Fatalf("OnRequest saw %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnRequest not called")
	}
	e.srv.OnRequest(nil)
	wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 200)
	time.Sleep(50 * time.Millisecond) // the hook runs just after the answer
	if len(seen) != 0 {
		t.Fatalf("OnRequest(nil) did not clear the hook: %d more calls", len(seen))
	}
}

func TestHeldRequests(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	held := make(chan Request, 4)
	e.srv.OnRequest(func(r Request) { held <- r })
	e.srv.InjectFault(Fault{Method: "PATCH", Hang: 10 * time.Second, Count: 1})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "PATCH", e.srv.GraphBaseURL()+"/users/"+cloud.ID, strings.NewReader(`{"displayName":"Slow"}`))
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		_, err := e.hc.Do(req)
		errc <- err
	}()
	// The hook hears of the request while it is held...
	select {
	case r := <-held:
		if r.Status != 0 || r.Method != "PATCH" || string(r.Body) != `{"displayName":"Slow"}` {
			t.Fatalf("held report %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnRequest not told of the held request")
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("held request already logged: %d entries", n)
	}
	// ...and when the client gives up, the slow server still carries it out.
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("client did not see its own cancellation")
	}
	select {
	case r := <-held:
		if r.Status != 204 {
			t.Fatalf("answered report %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnRequest not called when the held request was answered")
	}
	if got := e.user(cloud.ID).DisplayName; got != "Slow" {
		t.Fatalf("displayName %q: a merely slow request is still applied", got)
	}
}

// TestFaultsAfterTheWrite: an After fault lets the write take effect and
// then loses its answer (5xx, reset, or held past the client's patience);
// Effects counts it either way. Without After, the same faults refuse the
// write before it happens and Effects stays empty.
func TestFaultsAfterTheWrite(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, _ := seedUsers(e.srv)
	gid := "cccccccc-0000-0000-0000-000000000003"
	e.srv.PutGroup(gid, "Pending")
	patch := func(name string) (int, error) {
		req, _ := http.NewRequest("PATCH", e.srv.GraphBaseURL()+"/users/"+cloud.ID, strings.NewReader(`{"displayName":"`+name+`"}`))
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r, err := e.hc.Do(req.WithContext(ctx))
		if err != nil {
			return 0, err
		}
		r.Body.Close()
		return r.StatusCode, nil
	}
	for _, tt := range []struct {
		name    string
		fault   Fault
		status  int // answered; 0: no answer
		applied bool
	}{
		{"5xx before", Fault{Method: "PATCH", Status: 503, Count: 1}, 503, false},
		{"reset before", Fault{Method: "PATCH", Reset: true, Count: 1}, 0, false},
		{"5xx after", Fault{Method: "PATCH", Status: 500, After: true, Count: 1}, 500, true},
		{"reset after", Fault{Method: "PATCH", Reset: true, After: true, Count: 1}, 0, true},
		{"no answer after", Fault{Method: "PATCH", Hang: 10 * time.Second, Reset: true, After: true, Count: 1}, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.srv.ResetEffects()
			e.srv.InjectFault(tt.fault)
			name := "After " + tt.name
			start := time.Now()
			status, err := patch(name)
			if status != tt.status || (tt.status == 0) != (err != nil) {
				t.Fatalf("answered %d (%v), want %d", status, err, tt.status)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("a held answer did not end with the client")
			}
			applied := e.user(cloud.ID).DisplayName == name
			effects := e.srv.Effects()
			if applied != tt.applied || len(effects) != map[bool]int{true: 1, false: 0}[tt.applied] {
				t.Fatalf("applied %v, effects %+v; want applied %v and one effect per write that took", applied, effects, tt.applied)
			}
			if tt.applied && (effects[0].Method != "PATCH" || effects[0].Path != "/v1.0/users/"+cloud.ID || effects[0].Status != 204 || effects[0].Repeat) {
				t.Fatalf("effect %+v", effects[0])
			}
		})
	}

	t.Run("repeated group add and revoke are effects", func(t *testing.T) {
		e.srv.ResetEffects()
		ref := map[string]any{"@odata.id": e.srv.GraphBaseURL() + "/directoryObjects/" + cloud.ID}
		e.srv.InjectFault(Fault{Method: "POST", PathPrefix: "/v1.0/groups/", Status: 503, After: true, Count: 1})
		wantStatus(t, e.do("POST", "/v1.0/groups/"+gid+"/members/$ref", ref), 503)
		r := e.do("POST", "/v1.0/groups/"+gid+"/members/$ref", ref)
		wantError(t, r, 400, "Request_BadRequest")
		e.srv.InjectFault(Fault{Method: "POST", PathPrefix: "/v1.0/users/", Status: 504, After: true, Count: 1})
		wantStatus(t, e.do("POST", "/v1.0/users/"+cloud.ID+"/revokeSignInSessions", nil), 504)
		wantStatus(t, e.do("POST", "/v1.0/users/"+cloud.ID+"/revokeSignInSessions", nil), 200)
		e.do("GET", "/v1.0/users/"+cloud.ID, nil) // a read is never an effect
		var got []string
		for _, ef := range e.srv.Effects() {
			got = append(got, fmt.Sprintf("%s %s %d %v", ef.Method, strings.TrimPrefix(ef.Path, "/v1.0"), ef.Status, ef.Repeat))
		}
		want := []string{
			"POST /groups/" + gid + "/members/$ref 204 false",
			"POST /groups/" + gid + "/members/$ref 400 true",
			"POST /users/" + cloud.ID + "/revokeSignInSessions 200 false",
			"POST /users/" + cloud.ID + "/revokeSignInSessions 200 false",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("effects\n%v\nwant\n%v", got, want)
		}
	})

	t.Run("batch item applied then 503", func(t *testing.T) {
		e.srv.ResetEffects()
		e.srv.InjectFault(Fault{Method: "PATCH", PathPrefix: "/v1.0/users/" + cloud.ID, Status: 503, After: true, Count: 1})
		body := map[string]any{"requests": []any{
			map[string]any{"id": "1", "method": "PATCH", "url": "/users/" + cloud.ID, "headers": map[string]string{"Content-Type": "application/json"},
				"body": map[string]any{"displayName": "Batched"}},
		}}
		items := batchResponses(t, e.do("POST", "/v1.0/$batch", body))
		if s := itemStatus(items["1"]); s != 503 {
			t.Fatalf("item: %v", items["1"])
		}
		effects := e.srv.Effects()
		if e.user(cloud.ID).DisplayName != "Batched" || len(effects) != 1 || effects[0].ItemID != "1" || effects[0].BatchID == "" {
			t.Fatalf("the item was not applied, or not logged as an effect: %+v", effects)
		}
	})
}
