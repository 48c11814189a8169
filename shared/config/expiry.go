package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Expiry configures the password expiry rules and their scheduler
// (evaluator.expiry).
type Expiry struct {
	// Enabled computes each user's AD expiry, notifies and enforces it.
	Enabled bool `yaml:"enabled"`
	// LeadDays: notify this many days before expiry; 0 = at expiry,
	// negative = after it (e.g. [14, 7, 3, 1, 0, -1]).
	LeadDays []int `yaml:"lead_days"`
	// Notify sends the lead-day notices (delivered by the notifier).
	Notify bool `yaml:"notify"`
	// Enforce requires a password change in the cloud at expiry, the way
	// forced-change does (cloud flag, or the chain for synced users).
	Enforce bool `yaml:"enforce"`
	// MaxLate: a notice found due later than this (pwsync was down) is
	// skipped rather than sent stale. 0 = always send.
	MaxLate time.Duration `yaml:"max_late"`
	// SweepInterval: the scheduler re-reads every user's state this often,
	// catching anything its watch missed.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// TimeZone: IANA name used to show times (policy explain) when the
	// user's own is not known.
	TimeZone string `yaml:"time_zone"`
}

// Scope's group keys (evaluator.scope): include_groups (AD group DNs,
// nested membership counts), include_entra_groups (Entra group object IDs,
// transitive members) and entra_refresh (how often Entra membership is
// re-read) are validated here.

func defaultExpiry() Expiry {
	return Expiry{LeadDays: []int{14, 7, 3, 1, 0, -1}, Notify: true, Enforce: true, MaxLate: 36 * time.Hour,
		SweepInterval: time.Hour, TimeZone: "UTC"}
}

// validateExpiry checks evaluator.expiry and the scope's group keys.
func (e Evaluator) validateExpiry() []error {
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}
	x := e.Expiry
	for i, l := range x.LeadDays {
		if l < -365 || l > 365 {
			add(fmt.Sprintf("evaluator.expiry.lead_days[%d]", i), "must be between -365 and 365 (got %d)", l)
		}
		if slices.Index(x.LeadDays, l) != i {
			add(fmt.Sprintf("evaluator.expiry.lead_days[%d]", i), "duplicate lead day %d", l)
		}
	}
	if x.Enabled && x.Notify && len(x.LeadDays) == 0 {
		add("evaluator.expiry.lead_days", "required when evaluator.expiry.notify is on")
	}
	if x.Enabled && !x.Notify && !x.Enforce {
		add("evaluator.expiry.enabled", "neither evaluator.expiry.notify nor evaluator.expiry.enforce is on: nothing to do")
	}
	if x.MaxLate < 0 {
		add("evaluator.expiry.max_late", "must not be negative")
	}
	if x.SweepInterval < time.Minute {
		add("evaluator.expiry.sweep_interval", "must be at least 1m (got %s)", x.SweepInterval)
	}
	if _, err := time.LoadLocation(x.TimeZone); err != nil || x.TimeZone == "" {
		add("evaluator.expiry.time_zone", "unknown time zone %q (want an IANA name such as Europe/Berlin)", x.TimeZone)
	}
	for i, g := range e.Scope.IncludeGroups {
		if !strings.Contains(g, "=") {
			add(fmt.Sprintf("evaluator.scope.include_groups[%d]", i), "must be a group DN (got %q)", g)
		}
	}
	for i, g := range e.Scope.BreakGlassGroups {
		if !strings.Contains(g, "=") {
			add(fmt.Sprintf("evaluator.scope.break_glass_groups[%d]", i), "must be a group DN (got %q)", g)
		}
	}
	for i, g := range e.Scope.IncludeEntraGroups {
		if !isGUID(g) {
			add(fmt.Sprintf("evaluator.scope.include_entra_groups[%d]", i), "must be an Entra group object ID (got %q)", g)
		}
	}
	if len(e.Scope.IncludeEntraGroups) > 0 && e.Scope.EntraRefresh < time.Minute {
		add("evaluator.scope.entra_refresh", "must be at least 1m (got %s)", e.Scope.EntraRefresh)
	}
	return errs
}

// notifyWarnings: settings that are valid but make the evaluator decide
// notices nobody will send (the notifier skips each one as "notify.enabled
// is false"): said at start rather than found out from the audit trail.
func (c Config) notifyWarnings(t Targets) []string {
	if !t.Evaluator || c.Notify.Enabled {
		return nil
	}
	var out []string
	if x := c.Evaluator.Expiry; x.Enabled && x.Notify {
		out = append(out, "evaluator.expiry.notify is on but notify.enabled is off: every expiry notice is decided and audited, then skipped, never sent; "+
			"set notify.enabled: true (with notify.senders), or evaluator.expiry.notify: false")
	}
	if f := c.Evaluator.ForcedChange; f.Enabled && f.Notify {
		out = append(out, "evaluator.forced_change.notify is on but notify.enabled is off: no \"your password was reset\" notice is sent; "+
			"set notify.enabled: true (with notify.senders), or evaluator.forced_change.notify: false")
	}
	return out
}

// isGUID reports whether s looks like 8-4-4-4-12 hex.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
