package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// instancePattern keeps the name readable in logs, metric labels and the
// leases bucket.
var instancePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// InstanceName is this replica's stable name in leases: Config.Instance, or
// hostname + "-" + the target ("ingest", "evaluator", "actuator" or "all").
// A replica restarted under the same name takes its own leases back at once
// instead of waiting for their TTL, so the name must be unique per replica
// and stable across its restarts (a StatefulSet pod name, a VM's hostname
// with one process per target).
func (c Config) InstanceName(t Targets) string {
	if c.Instance != "" {
		return c.Instance
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "pwsync"
	}
	return sanitizeInstance(host) + "-" + t.Name()
}

// Name is the --target value these targets were chosen with.
func (t Targets) Name() string {
	var parts []string
	for _, p := range []struct {
		on   bool
		name string
	}{{t.Ingest, "ingest"}, {t.Evaluator, "evaluator"}, {t.Actuator, "actuator"}} {
		if p.on {
			parts = append(parts, p.name)
		}
	}
	if len(parts) == 3 {
		return "all"
	}
	return strings.Join(parts, "+")
}

// sanitizeInstance maps a hostname to the instance alphabet.
func sanitizeInstance(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

func validateInstance(s string) []error {
	if s == "" || instancePattern.MatchString(s) {
		return nil
	}
	return []error{fmt.Errorf("instance: must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (got %q)", s)}
}
