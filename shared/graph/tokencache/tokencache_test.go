package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// slowCred is a token endpoint that takes delay and issues tokens living
// life; fail makes it refuse.
type slowCred struct {
	delay, life time.Duration
	n           atomic.Int64
	fail        atomic.Bool
}

func (s *slowCred) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return azcore.AccessToken{}, ctx.Err()
	}
	if s.fail.Load() {
		return azcore.AccessToken{}, errors.New("token endpoint down")
	}
	n := s.n.Add(1)
	return azcore.AccessToken{Token: fmt.Sprintf("t%d", n), ExpiresOn: time.Now().Add(s.life)}, nil
}

var scopes = []string{"https://graph.example/.default"}

// TestTokenNeverOnTheHotPath: with Run going, callers over several token
// lifetimes get a valid token without waiting for the (slow) endpoint;
// renewals happen in the background ahead of expiry.
func TestTokenNeverOnTheHotPath(t *testing.T) {
	inner := &slowCred{delay: 150 * time.Millisecond, life: 1200 * time.Millisecond}
	c := New(inner, scopes, 400*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitUntil := time.Now().Add(2 * time.Second)
	for c.Fetches() == 0 || inner.n.Load() == 0 {
		if time.Now().After(waitUntil) {
			t.Fatal("no token fetched in the background")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the first fetch is in
	end := time.Now().Add(4 * time.Second)
	var worst time.Duration
	calls := 0
	for time.Now().Before(end) {
		start := time.Now()
		tok, err := c.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: scopes})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if !tok.ExpiresOn.After(time.Now()) {
			t.Fatalf("expired token %s handed out", tok.Token)
		}
		worst = max(worst, took)
		calls++
		time.Sleep(10 * time.Millisecond)
	}
	if worst > 50*time.Millisecond {
		t.Fatalf("a caller waited %v for a token (endpoint takes %v): the token was on the hot path", worst, inner.delay)
	}
	if n := inner.n.Load(); n < 3 {
		t.Fatalf("%d tokens issued over ~4 lifetimes: not renewed in the background", n)
	}
	t.Logf("%d calls, worst %v, %d tokens issued", calls, worst, inner.n.Load())
}

// TestTokenFallsBackWhenNotKept: before Run has a token (or when it cannot
// renew one) a caller gets the endpoint's token synchronously, and other
// scopes pass through.
func TestTokenFallsBackWhenNotKept(t *testing.T) {
	inner := &slowCred{life: time.Hour}
	c := New(inner, scopes, 0)
	for i := range 3 {
		tok, err := c.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: scopes})
		if err != nil || tok.Token != "t1" {
			t.Fatalf("call %d: %q, %v; want the first token, kept", i, tok.Token, err)
		}
	}
	if _, err := c.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"other"}}); err != nil {
		t.Fatal(err)
	}
	if n := inner.n.Load(); n != 2 {
		t.Fatalf("%d tokens issued, want 2 (one kept, one for other scopes)", n)
	}
	inner.fail.Store(true)
	expired := New(inner, scopes, 0)
	if _, err := expired.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: scopes}); err == nil {
		t.Fatal("endpoint down and nothing kept: want its error")
	}
}
