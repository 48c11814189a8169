package deployments_test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/config"
)

// TestAuditSinksExample: the audit sinks example loads with the example
// config, and the sample Sentinel table, the DCR's stream and the rows the
// sink sends (auditship.SentinelRow's JSON names) have the same columns.
func TestAuditSinksExample(t *testing.T) {
	base := read(t, filepath.Join("config", "pwsync.example.yaml"))
	sinks := read(t, filepath.Join("config", "audit-sinks.example.yaml"))
	cfg := loadConfig(t, "example with audit sinks", append(append(base, '\n'), sinks...), "/etc/pwsync", config.AllTargets)
	if len(cfg.Audit.Sinks) != 3 || cfg.Audit.Sinks[1].Sentinel.Scope != "https://monitor.azure.com/.default" {
		t.Fatalf("sinks: %+v", cfg.Audit.Sinks)
	}

	var table struct {
		Properties struct {
			Schema struct {
				Columns []struct{ Name, Type string }
			}
		}
	}
	var dcr struct {
		Properties struct {
			StreamDeclarations map[string]struct{ Columns []struct{ Name, Type string } }
			DataFlows          []struct{ Streams []string }
		}
	}
	for path, v := range map[string]any{"sentinel/pwsync-audit-table.json": &table, "sentinel/pwsync-audit-dcr.json": &dcr} {
		if err := json.Unmarshal(read(t, path), v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	stream := cfg.Audit.Sinks[1].Sentinel.Stream
	decl, ok := dcr.Properties.StreamDeclarations[stream]
	if !ok || len(dcr.Properties.DataFlows) != 1 || !slices.Contains(dcr.Properties.DataFlows[0].Streams, stream) {
		t.Fatalf("the DCR does not declare and route %s", stream)
	}
	if !reflect.DeepEqual(decl.Columns, table.Properties.Schema.Columns) {
		t.Errorf("DCR stream columns %v differ from the table's %v", decl.Columns, table.Properties.Schema.Columns)
	}
	src := string(read(t, filepath.Join("..", "services", "auditship", "sentinel.go")))
	for _, c := range table.Properties.Schema.Columns {
		if !strings.Contains(src, `json:"`+c.Name) {
			t.Errorf("column %s is not a field of auditship.SentinelRow", c.Name)
		}
	}
}
