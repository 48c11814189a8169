package config

import (
	"fmt"
	"time"
)

// Campaigns configures breach-response mass resets (services/campaign).
// The runner runs with the actuator target, under a lease.
type Campaigns struct {
	// Enabled runs the campaign runner and registers the admin API routes.
	Enabled bool `yaml:"enabled"`
	// ApprovalThreshold: campaigns above this many users need a second
	// person (approver role, not the creator) to approve; 0 = all of them.
	ApprovalThreshold int `yaml:"approval_threshold"`
	// HardCap: campaigns above this many users are refused at preview.
	HardCap int `yaml:"hard_cap"`
	// Campaign writes come from the process's one write budget
	// (actuator.write_budget per write_window), after live resets and
	// expiry enforcement: at most WriteShare of it, and at most WriteBudget
	// per WriteWindow when that is lower (it sizes the budget when
	// actuator.write_budget is 0).
	WriteBudget int           `yaml:"write_budget"`
	WriteWindow time.Duration `yaml:"write_window"`
	WriteShare  float64       `yaml:"write_share"`
	// Concurrency: $batch requests in flight; ADConcurrency: LDAP writers.
	Concurrency   int `yaml:"concurrency"`
	ADConcurrency int `yaml:"ad_concurrency"`
	// MaxAttempts per write (429s are pacing and do not count).
	MaxAttempts int `yaml:"max_attempts"`
	// UncertainWait: after a restart, a write sent without a recorded
	// answer is read back only after this long (it may still be in flight);
	// at least graph.timeout.
	UncertainWait time.Duration `yaml:"uncertain_wait"`
	// WithMFA sets forceChangePasswordNextSignInWithMfa too.
	WithMFA bool `yaml:"with_mfa"`
	// ADOutageAlert: a running campaign whose DC has been unreachable this
	// long alerts the admins (and again when it answers).
	ADOutageAlert time.Duration `yaml:"ad_outage_alert"`
}

func defaultCampaigns() Campaigns {
	return Campaigns{Enabled: true, ApprovalThreshold: 100, HardCap: 50000, WriteBudget: 3000, WriteWindow: 150 * time.Second,
		WriteShare: 1, Concurrency: 4, ADConcurrency: 4, MaxAttempts: 8, UncertainWait: 45 * time.Second,
		ADOutageAlert: 2 * time.Minute}
}

func (c Campaigns) validate(graphTimeout time.Duration) []error {
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("campaigns.%s: "+format, append([]any{key}, a...)...))
	}
	if !c.Enabled {
		return nil
	}
	if c.ApprovalThreshold < 0 {
		add("approval_threshold", "must not be negative (0 = every campaign needs approval)")
	}
	if c.HardCap < 1 {
		add("hard_cap", "must be at least 1")
	}
	if c.ApprovalThreshold > c.HardCap {
		add("approval_threshold", "is above campaigns.hard_cap (%d): no campaign would ever need approval", c.HardCap)
	}
	if c.WriteBudget < 1 || c.WriteWindow < time.Second {
		add("write_budget", "must be at least 1, with campaigns.write_window at least 1s")
	}
	if c.WriteShare <= 0 || c.WriteShare > 1 {
		add("write_share", "must be in (0, 1] (got %v)", c.WriteShare)
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		add("concurrency", "must be between 1 and 64 (got %d)", c.Concurrency)
	}
	if c.ADConcurrency < 1 || c.ADConcurrency > 32 {
		add("ad_concurrency", "must be between 1 and 32 (got %d)", c.ADConcurrency)
	}
	if c.MaxAttempts < 1 {
		add("max_attempts", "must be at least 1")
	}
	if c.ADOutageAlert < time.Second {
		add("ad_outage_alert", "must be at least 1s (got %s)", c.ADOutageAlert)
	}
	if c.UncertainWait < graphTimeout {
		add("uncertain_wait", "must be at least graph.timeout (%s): a write of a stopped run may still be in flight until then", graphTimeout)
	}
	return errs
}
