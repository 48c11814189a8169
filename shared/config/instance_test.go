package config

import (
	"os"
	"testing"
)

func TestInstanceName(t *testing.T) {
	host, _ := os.Hostname()
	host = sanitizeInstance(host)
	tests := []struct {
		name     string
		instance string
		targets  Targets
		want     string
	}{
		{"configured", "vm1-ingest", Targets{Ingest: true}, "vm1-ingest"},
		{"default_ingest", "", Targets{Ingest: true}, host + "-ingest"},
		{"default_actuator", "", Targets{Actuator: true}, host + "-actuator"},
		{"default_all", "", AllTargets, host + "-all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Config{Instance: tt.instance}).InstanceName(tt.targets); got != tt.want {
				t.Fatalf("InstanceName = %q, want %q", got, tt.want)
			}
			if errs := validateInstance(tt.want); errs != nil {
				t.Fatalf("the name %q fails its own validation: %v", tt.want, errs)
			}
		})
	}
	if got := sanitizeInstance("host name/é"); got != "host_name__" {
		t.Fatalf("sanitizeInstance = %q", got)
	}
	for _, bad := range []string{"-lead", "a b", "x\ny", string(make([]byte, 129))} {
		if validateInstance(bad) == nil {
			t.Errorf("instance %q accepted", bad)
		}
	}
}
