package graphwatch

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/pwsync/pwsync/shared/lease"
)

// Graph's limit for subscriptions on users and other directory resources is
// 41,760 minutes; asking for exactly that fails when our clock runs a little
// ahead of Graph's, hence the margin.
const (
	graphMaxLifetime = 41760 * time.Minute
	lifetimeMargin   = 15 * time.Minute
	// MaxLifetime is the longest (and the default) subscription lifetime.
	MaxLifetime = graphMaxLifetime - lifetimeMargin
)

// Config configures the subscription manager and the delta poller.
type Config struct {
	// NotificationURL and LifecycleURL are the public HTTPS URLs Graph calls:
	// the webhook receiver's /graph/notifications and /graph/lifecycle.
	NotificationURL, LifecycleURL string
	// Lifetime is the requested subscription lifetime (default and max
	// MaxLifetime).
	Lifetime time.Duration
	// RenewBefore: renew when less than this remains (default Lifetime/3).
	RenewBefore time.Duration
	// CheckEvery is how often the manager checks the subscription (default 1m).
	CheckEvery time.Duration
	// DeltaInterval is the period of delta rounds without notifications
	// (default 5m); notifications trigger rounds at once, coalesced.
	DeltaInterval time.Duration
	// FollowUp: a round caused by a notification is followed by one more
	// after this long (default 70s). The webhook collapses marker-less
	// notifications of one user within its dedup window (1m), so a second
	// change inside that window has no notification of its own.
	FollowUp time.Duration
	// Holder names this replica in the leases (default hostname-pid).
	Holder string
	// Now is the clock used for expiry decisions (default time.Now).
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Lifetime == 0 {
		c.Lifetime = MaxLifetime
	}
	if c.RenewBefore == 0 {
		c.RenewBefore = c.Lifetime / 3
	}
	if c.CheckEvery == 0 {
		c.CheckEvery = time.Minute
	}
	if c.DeltaInterval == 0 {
		c.DeltaInterval = 5 * time.Minute
	}
	if c.FollowUp == 0 {
		c.FollowUp = 70 * time.Second
	}
	if c.Holder == "" {
		c.Holder = lease.DefaultHolder()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	for name, raw := range map[string]string{"notification_url": c.NotificationURL, "lifecycle_url": c.LifecycleURL} {
		u, err := url.Parse(raw)
		switch {
		case raw == "":
			return fmt.Errorf("graphwatch: %s is required", name)
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			// Graph itself only accepts https; http is for the simulator.
			return fmt.Errorf("graphwatch: %s must be an absolute https URL (got %q)", name, raw)
		}
	}
	switch {
	case c.Lifetime < time.Minute || c.Lifetime > MaxLifetime:
		return fmt.Errorf("graphwatch: lifetime must be between 1m and %v (got %v)", MaxLifetime, c.Lifetime)
	case c.RenewBefore <= 0 || c.RenewBefore >= c.Lifetime:
		return fmt.Errorf("graphwatch: renew_before must be positive and below lifetime %v (got %v)", c.Lifetime, c.RenewBefore)
	case c.CheckEvery <= 0 || c.CheckEvery >= c.RenewBefore:
		// Otherwise a check could come only after the subscription expired.
		return fmt.Errorf("graphwatch: check_every must be positive and below renew_before %v (got %v)", c.RenewBefore, c.CheckEvery)
	case c.DeltaInterval <= 0:
		return errors.New("graphwatch: delta_interval must be positive")
	}
	return nil
}
