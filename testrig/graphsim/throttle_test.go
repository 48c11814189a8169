package graphsim

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

func TestWriteBudgetStandalone(t *testing.T) {
	e := newEnv(t, Options{WriteBudget: 5, WriteWindow: 2 * time.Second})
	cloud, _ := seedUsers(e.srv)
	patch := func() resp {
		return e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"passwordPolicies": "None"})
	}
	wantPercent := []string{"", "", "", "", "1.00"} // only above 80% of the budget
	for i := range 5 {
		r := patch()
		wantStatus(t, r, 204)
		if got := r.header.Get("x-ms-resource-unit"); got != "1" {
			t.Errorf("write %d: x-ms-resource-unit %q", i+1, got)
		}
		if got := r.header.Get("x-ms-throttle-limit-percentage"); got != wantPercent[i] {
			t.Errorf("write %d: x-ms-throttle-limit-percentage %q, want %q", i+1, got, wantPercent[i])
		}
	}
	throttledAt := time.Now()
	r := patch()
	wantError(t, r, 429, codeTooManyRequests)
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q: want whole seconds in [1,2]", r.header.Get("Retry-After"))
	}
	if got, want := r.header.Get("x-ms-throttle-scope"), "Tenant_Application/Write/"+e.srv.ClientID()+"/"+e.srv.TenantID(); got != want {
		t.Errorf("x-ms-throttle-scope %q, want %q", got, want)
	}
	if got := r.header.Get("x-ms-throttle-information"); got != "WriteLimitExceeded" {
		t.Errorf("x-ms-throttle-information %q", got)
	}
	// Reads are not writes: they still pass.
	wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID, nil), 200)

	time.Sleep(time.Until(throttledAt.Add(time.Duration(ra) * time.Second)))
	wantStatus(t, patch(), 204)

	st := e.srv.Stats()
	if st.Writes != 6 || st.Throttled != 1 || st.ByStatus[429] != 1 || st.ByStatus[204] != 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWriteBudgetBatchItems(t *testing.T) {
	e := newEnv(t, Options{WriteBudget: 3, WriteWindow: time.Minute})
	cloud, _ := seedUsers(e.srv)
	var reqs []map[string]any
	for i := range 5 {
		reqs = append(reqs, map[string]any{"id": fmt.Sprint(i + 1), "method": "PATCH", "url": "/users/" + cloud.ID,
			"headers": map[string]string{"Content-Type": "application/json"}, "body": map[string]any{"passwordPolicies": "None"}})
	}
	reqs = append(reqs, map[string]any{"id": "6", "method": "GET", "url": "/users/" + cloud.ID})
	items := batchResponses(t, e.do("POST", "/v1.0/$batch", map[string]any{"requests": reqs}))
	wantStatus := map[string]int{"1": 204, "2": 204, "3": 204, "4": 429, "5": 429, "6": 200}
	for id, w := range wantStatus {
		it := items[id]
		if itemStatus(it) != w {
			t.Errorf("item %s: status %d, want %d", id, itemStatus(it), w)
			continue
		}
		h := it["headers"].(map[string]any)
		if w == 429 {
			ra, err := strconv.Atoi(fmt.Sprint(h["Retry-After"]))
			if err != nil || ra < 59 || ra > 60 {
				t.Errorf("item %s: Retry-After %v", id, h["Retry-After"])
			}
			if h["x-ms-throttle-information"] != "WriteLimitExceeded" || itemErrorCode(it) != codeTooManyRequests {
				t.Errorf("item %s: %v", id, it)
			}
		}
	}
	// The batch itself is not a write, and a standalone write is now throttled too.
	if st := e.srv.Stats(); st.Writes != 3 || st.Throttled != 2 {
		t.Fatalf("stats %+v", st)
	}
	r := e.do("DELETE", "/v1.0/groups/x/members/y/$ref", nil)
	if r.status != 429 {
		t.Fatalf("standalone write after the batch: %d", r.status)
	}
	// Raising the budget at run time lets writes through again.
	e.srv.SetWriteBudget(0, 0)
	if r := e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"passwordPolicies": "None"}); r.status != 204 {
		t.Fatalf("unlimited budget: %d", r.status)
	}
}

func TestWriteBudgetUnit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newWindowLimit(2, 10*time.Second)
	steps := []struct {
		at        time.Duration
		wantOK    bool
		wantRetry time.Duration
	}{
		{0, true, 0},
		{4 * time.Second, true, 0},
		{5 * time.Second, false, 5 * time.Second},  // the write at 0s leaves at 10s
		{10 * time.Second, true, 0},                // it has left
		{11 * time.Second, false, 3 * time.Second}, // the write at 4s leaves at 14s
	}
	for _, st := range steps {
		ok, retry, _ := b.take("app/tenant", t0.Add(st.at))
		if ok != st.wantOK || retry != st.wantRetry {
			t.Errorf("at %v: ok=%v retry=%v, want %v %v", st.at, ok, retry, st.wantOK, st.wantRetry)
		}
	}
	if ok, _, _ := b.take("other/tenant", t0.Add(11*time.Second)); !ok {
		t.Error("scopes are separate budgets")
	}
	if got := retryAfterValue(1500 * time.Millisecond); got != "2" {
		t.Errorf("retryAfterValue(1.5s) = %s, want 2", got)
	}
	if got := retryAfterValue(10 * time.Millisecond); got != "1" {
		t.Errorf("retryAfterValue(10ms) = %s, want 1", got)
	}
}

func TestDefaultWriteBudget(t *testing.T) {
	tests := []struct {
		in        int
		wantLimit int
	}{{0, DefaultWriteBudget}, {-1, 0}, {7, 7}}
	for _, tt := range tests {
		if got := withDefaults(Options{WriteBudget: tt.in}).WriteBudget; got != tt.wantLimit {
			t.Errorf("WriteBudget %d -> %d, want %d", tt.in, got, tt.wantLimit)
		}
	}
}
