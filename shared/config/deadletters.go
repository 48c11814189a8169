package config

import "time"

// DeadLetterAlerts: each new dead letter (a message that exhausted its
// deliveries or was refused) becomes an admin alert on the Workflows
// webhook. Up to PerWindow get a card of their own in any Window; beyond
// that, the rest of a storm is summarised in one card per Window.
type DeadLetterAlerts struct {
	Enabled   bool          `yaml:"enabled"`
	PerWindow int           `yaml:"per_window"`
	Window    time.Duration `yaml:"window"`
}

func defaultDeadLetterAlerts() DeadLetterAlerts {
	return DeadLetterAlerts{Enabled: true, PerWindow: 5, Window: time.Minute}
}

func (d DeadLetterAlerts) validate(add func(key, format string, a ...any)) {
	if !d.Enabled {
		return
	}
	if d.PerWindow < 1 {
		add("dead_letters.per_window", "must be at least 1 (got %d)", d.PerWindow)
	}
	if d.Window < time.Second {
		add("dead_letters.window", "must be at least 1s (got %s)", d.Window)
	}
}
