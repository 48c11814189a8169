// Package tokencache keeps Graph's access token fresh in the background, so
// that no Graph request waits for the token endpoint: a credential that
// answers from its copy and renews it ahead of expiry (Run). It links azcore
// only, not msgraph-sdk-go.
package tokencache

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

const (
	// Margin: a token is renewed this long before it expires. MSAL (under
	// azidentity) answers from its own cache until 5 minutes before expiry
	// and renews inside that window; asked at its edge, it may answer the
	// cached token once more, and Run asks again shortly.
	Margin = 5 * time.Minute
	// retryWait is the pause after a failed renewal (bounded by what the
	// kept token has left).
	retryWait = 5 * time.Second
)

// Credential wraps an azcore.TokenCredential for one set of scopes.
type Credential struct {
	inner  azcore.TokenCredential
	scopes []string
	margin time.Duration
	// minLeft: a kept token with less left than this is not handed out;
	// the caller waits for the inner credential instead.
	minLeft time.Duration
	now     func() time.Time

	mu  sync.Mutex
	tok azcore.AccessToken

	fetches atomic.Int64
}

// New keeps tokens of inner for scopes; margin 0 = Margin.
func New(inner azcore.TokenCredential, scopes []string, margin time.Duration) *Credential {
	if margin <= 0 {
		margin = Margin
	}
	return &Credential{inner: inner, scopes: slices.Clone(scopes), margin: margin, minLeft: min(30*time.Second, margin/8), now: time.Now}
}

// Fetches is how many times the inner credential was asked.
func (c *Credential) Fetches() int64 { return c.fetches.Load() }

// GetToken implements azcore.TokenCredential: the kept token while it has
// time left; otherwise (before Run's first fetch, or renewals failing) the
// inner credential's, which is kept. Other scopes or claims pass through.
func (c *Credential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if !slices.Equal(opts.Scopes, c.scopes) || opts.Claims != "" || opts.EnableCAE {
		return c.inner.GetToken(ctx, opts)
	}
	c.mu.Lock()
	tok := c.tok
	c.mu.Unlock()
	if tok.Token != "" && c.now().Add(c.minLeft).Before(tok.ExpiresOn) {
		return tok, nil
	}
	return c.fetch(ctx)
}

func (c *Credential) fetch(ctx context.Context) (azcore.AccessToken, error) {
	c.fetches.Add(1)
	tok, err := c.inner.GetToken(ctx, policy.TokenRequestOptions{Scopes: c.scopes})
	if err != nil {
		return tok, err
	}
	c.mu.Lock()
	if tok.ExpiresOn.After(c.tok.ExpiresOn) {
		c.tok = tok
	}
	c.mu.Unlock()
	return tok, nil
}

// Run fetches a token at once and renews it ahead of expiry until ctx ends.
func (c *Credential) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var last time.Time // the expiry of the token the previous renewal got
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tok, err := c.fetch(ctx)
		now := c.now()
		var wait time.Duration
		switch {
		case err != nil:
			c.mu.Lock()
			left := c.tok.ExpiresOn.Sub(now)
			c.mu.Unlock()
			wait = retryWait
			if left > 0 {
				wait = min(retryWait, max(left/4, time.Second))
			}
		case !tok.ExpiresOn.After(last):
			// The inner credential answered from its cache: ask again
			// shortly, until it renews.
			wait = max(min(30*time.Second, tok.ExpiresOn.Sub(now)/4), 100*time.Millisecond)
		default:
			wait = c.renewIn(tok, now)
		}
		if err == nil {
			last = tok.ExpiresOn
		}
		t.Reset(wait)
	}
}

// renewIn is when to renew tok: at its suggested refresh time, or margin
// before it expires, or at half its life for a token shorter than margin.
func (c *Credential) renewIn(tok azcore.AccessToken, now time.Time) time.Duration {
	life := tok.ExpiresOn.Sub(now)
	wait := life - c.margin
	if wait <= 0 {
		wait = life / 2
	}
	if !tok.RefreshOn.IsZero() && tok.RefreshOn.Sub(now) < wait {
		wait = tok.RefreshOn.Sub(now)
	}
	return max(wait, 100*time.Millisecond)
}
