package campaign

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

// scriptedBatcher answers $batch calls from a script: call n gets fail[n]
// as the whole call's error, or else throttles the items in throttle[n].
type scriptedBatcher struct {
	fail     map[int]error
	throttle map[int]map[string]time.Duration // item ID -> Retry-After
	calls    int
	sent     [][]string
}

func (s *scriptedBatcher) Batch(_ context.Context, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	n := s.calls
	s.calls++
	var ids []string
	for _, r := range reqs {
		ids = append(ids, r.ID)
	}
	s.sent = append(s.sent, ids)
	if err := s.fail[n]; err != nil {
		return nil, err
	}
	out := make([]graph.BatchResponse, len(reqs))
	for i, r := range reqs {
		if ra, ok := s.throttle[n][r.ID]; ok {
			out[i] = graph.BatchResponse{ID: r.ID, Status: http.StatusTooManyRequests, RetryAfter: ra,
				Err: &graph.Error{Status: http.StatusTooManyRequests, RetryAfter: ra}}
			continue
		}
		out[i] = graph.BatchResponse{ID: r.ID, Status: http.StatusOK}
	}
	return out, nil
}

// TestBatchReads pins batchReads' retries (kept when they moved onto
// shared/retry): only the throttled items are sent again, at least their
// Retry-After apart, six tries in all, after which their answers stand; a
// whole-call error is retried when Graph says so and returned otherwise.
func TestBatchReads(t *testing.T) {
	reqs := []graph.BatchRequest{{ID: "a", Method: "GET", URL: "/users/a"}, {ID: "b", Method: "GET", URL: "/users/b"}}
	always := map[int]map[string]time.Duration{}
	for n := range 10 {
		always[n] = map[string]time.Duration{"b": 0}
	}
	tests := []struct {
		name      string
		b         *scriptedBatcher
		wantCalls int
		wantErr   bool
		wantB     int // item b's final status
		minTime   time.Duration
	}{
		{name: "throttled_item_resent_after_retry_after",
			b:         &scriptedBatcher{throttle: map[int]map[string]time.Duration{0: {"b": 300 * time.Millisecond}}},
			wantCalls: 2, wantB: http.StatusOK, minTime: 300 * time.Millisecond},
		{name: "six_tries_then_the_answer_stands", b: &scriptedBatcher{throttle: always},
			wantCalls: 6, wantB: http.StatusTooManyRequests, minTime: (200 + 400 + 800 + 1600 + 3200) * time.Millisecond},
		{name: "whole_call_server_error_retried",
			b:         &scriptedBatcher{fail: map[int]error{0: &graph.Error{Status: http.StatusServiceUnavailable}}},
			wantCalls: 2, wantB: http.StatusOK, minTime: 200 * time.Millisecond},
		{name: "whole_call_client_error_returned",
			b:         &scriptedBatcher{fail: map[int]error{0: &graph.Error{Status: http.StatusForbidden}}},
			wantCalls: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			out, err := batchReads(context.Background(), tt.b, reqs)
			el := time.Since(start)
			if tt.b.calls != tt.wantCalls {
				t.Errorf("%d $batch calls, want %d", tt.b.calls, tt.wantCalls)
			}
			if tt.wantErr {
				var ge *graph.Error
				if !errors.As(err, &ge) || ge.Status != http.StatusForbidden {
					t.Fatalf("err = %v, want the 403", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out[0].Status != http.StatusOK || out[1].Status != tt.wantB {
				t.Fatalf("answers %d %d, want 200 %d", out[0].Status, out[1].Status, tt.wantB)
			}
			for n, ids := range tt.b.sent[1:] {
				if len(ids) != 1 && tt.b.fail[n] == nil {
					t.Errorf("try %d sent %v, want only the throttled item", n+2, ids)
				}
			}
			if el < tt.minTime {
				t.Errorf("took %v, want at least %v", el, tt.minTime)
			}
		})
	}
}
