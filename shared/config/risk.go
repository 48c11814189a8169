package config

import (
	"fmt"
	"slices"
	"time"
)

// Risk configures the breach-signal loop (issue 17): Entra ID Protection's
// risky users and risk detections, read by ingest, judged by the evaluator,
// acted on in AD (synced users: pwdLastSet 0) or in the cloud.
type Risk struct {
	Enabled bool `yaml:"enabled"`
	// PollInterval: how often riskyUsers and riskDetections are read
	// (neither supports change notifications).
	PollInterval time.Duration `yaml:"poll_interval"`
	// Lookback: how far back the first poll reads, and the overlap of each
	// later one (detections may appear after their detectedDateTime).
	Lookback time.Duration `yaml:"lookback"`
	// Levels: risk levels of a detection that trigger (low, medium, high).
	Levels []string `yaml:"levels"`
	// States: the risky user's states that trigger (atRisk, confirmedCompromised).
	States []string `yaml:"states"`
	// DetectionTypes: riskEventType values that trigger; empty = any.
	DetectionTypes []string `yaml:"detection_types"`
	// DryRun: decide and audit, write nothing (whatever evaluator.dry_run says).
	DryRun bool `yaml:"dry_run"`
	// HourlyCap: risk actions per clock hour published at once; beyond it
	// they are held for an approver (the backfill brake). 0 = always ask.
	HourlyCap int `yaml:"hourly_cap"`
	// Notify: tell the user their password was reset.
	Notify bool `yaml:"notify"`
	// DismissAfterChange: once AD shows the new password, dismiss the
	// user's risk. pwsync does it at once, so it comes before Entra's own
	// remediation (which waits for password hash sync) even when the tenant
	// setting is on: the risk then reads dismissed, not remediated.
	DismissAfterChange bool `yaml:"dismiss_after_change"`
	// StillAtRiskAfter: this long after AD shows the new password, read
	// the user's risk again and alert the admins if it is still at risk
	// (neither Entra nor the dismissal remediated it). 0 = no check.
	StillAtRiskAfter time.Duration `yaml:"still_at_risk_after"`
}

// Risk levels and states the rules know.
var (
	riskLevels = []string{"low", "medium", "high"}
	riskStates = []string{"atRisk", "confirmedCompromised"}
)

func defaultRisk() Risk {
	return Risk{PollInterval: time.Minute, Lookback: time.Hour, Levels: []string{"high"},
		States: []string{"atRisk", "confirmedCompromised"}, DetectionTypes: []string{"leakedCredentials"},
		HourlyCap: 20, Notify: true, StillAtRiskAfter: time.Hour}
}

func (r Risk) validate() []error {
	if !r.Enabled {
		return nil
	}
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("risk.%s: "+format, append([]any{key}, a...)...))
	}
	if r.PollInterval < time.Second {
		add("poll_interval", "must be at least 1s (got %s)", r.PollInterval)
	}
	if r.Lookback < 0 {
		add("lookback", "must not be negative")
	}
	if len(r.Levels) == 0 {
		add("levels", "must name at least one of %v", riskLevels)
	}
	for _, l := range r.Levels {
		if !slices.Contains(riskLevels, l) {
			add("levels", "%q is not one of %v", l, riskLevels)
		}
	}
	if len(r.States) == 0 {
		add("states", "must name at least one of %v", riskStates)
	}
	for _, s := range r.States {
		if !slices.Contains(riskStates, s) {
			add("states", "%q is not one of %v", s, riskStates)
		}
	}
	if r.StillAtRiskAfter < 0 {
		add("still_at_risk_after", "must not be negative (0 = no check)")
	}
	if r.HourlyCap < 0 {
		add("hourly_cap", "must not be negative")
	}
	return errs
}
