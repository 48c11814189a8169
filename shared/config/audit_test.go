package config

import (
	"strings"
	"testing"
)

func TestAuditSinks(t *testing.T) {
	const graph = "graph: {tenant_id: t, client_id: c, client_secret: s}\n"
	cases := []struct {
		name, yaml, err string
	}{
		{"syslog defaults", "audit: {sinks: [{name: siem, type: syslog, syslog: {address: 'siem:6514'}}]}", ""},
		{"udp json", "audit: {sinks: [{name: u, type: syslog, syslog: {network: udp, address: '10.0.0.1:514'}}]}", ""},
		{"plain tcp off loopback", "audit: {sinks: [{name: p, type: syslog, syslog: {network: tcp, address: '10.0.0.1:514'}}]}", "plain tcp sends the audit trail in clear"},
		{"plain tcp on loopback", "audit: {sinks: [{name: p, type: syslog, syslog: {network: tcp, address: '127.0.0.1:514'}}]}", ""},
		{"bad format", "audit: {sinks: [{name: s, type: syslog, syslog: {address: 'a:1', format: leef}}]}", "format: must be json or cef"},
		{"half a client cert", "audit: {sinks: [{name: s, type: syslog, syslog: {address: 'a:1', cert_file: /x}}]}", "set both cert_file and key_file"},
		{"bad name", "audit: {sinks: [{name: 'Has Space', type: syslog, syslog: {address: 'a:1'}}]}", "audit.sinks[0].name"},
		{"duplicate", "audit: {sinks: [{name: a, type: syslog, syslog: {address: 'a:1'}}, {name: a, type: syslog, syslog: {address: 'a:1'}}]}", "duplicate sink name"},
		{"kind wildcard", "audit: {sinks: [{name: a, type: syslog, kinds: ['>'], syslog: {address: 'a:1'}}]}", "kinds[0]"},
		{"unknown type", "audit: {sinks: [{name: a, type: splunk}]}", "must be syslog, sentinel or otlp"},
		{"unknown key", "audit: {sinks: [{name: a, type: syslog, syslog: {adress: 'a:1'}}]}", "audit.sinks[0].syslog.adress: unknown key"},
		{"sentinel", graph + "audit: {sinks: [{name: s, type: sentinel, sentinel: {endpoint: 'https://dce.example', rule_id: dcr-00112233445566778899aabbccddeeff, stream: Custom-PwsyncAudit_CL}}]}", ""},
		{"sentinel without graph", "audit: {sinks: [{name: s, type: sentinel, sentinel: {endpoint: 'https://dce.example', rule_id: dcr-00112233445566778899aabbccddeeff, stream: Custom-PwsyncAudit_CL}}]}", "takes its token from the Entra app"},
		{"sentinel bad rule", graph + "audit: {sinks: [{name: s, type: sentinel, sentinel: {endpoint: 'https://dce.example', rule_id: my-dcr, stream: Custom-X}}]}", "rule_id: must be the DCR's immutable ID"},
		{"sentinel http", graph + "audit: {sinks: [{name: s, type: sentinel, sentinel: {endpoint: 'http://dce.example', rule_id: dcr-00112233445566778899aabbccddeeff, stream: Custom-X}}]}", "sentinel.endpoint"},
		{"otlp", "audit: {sinks: [{name: o, type: otlp, otlp: {endpoint: 'https://c:4318/v1/logs', headers: {Authorization: 'env:OTLP_AUTH'}}}]}", ""},
		{"otlp plain off loopback", "audit: {sinks: [{name: o, type: otlp, otlp: {endpoint: 'http://c:4318/v1/logs'}}]}", "plain http sends the audit trail in clear"},
		{"batch too big", "audit: {sinks: [{name: a, type: syslog, batch_size: 100000, syslog: {address: 'a:1'}}]}", "batch_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml), func(k string) string { return "value-of-" + k })
			if err == nil {
				err = cfg.Validate(Targets{})
			}
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one containing %q", err, c.err)
			}
		})
	}
}

func TestAuditSinkDefaultsAndSecrets(t *testing.T) {
	cfg, err := Parse([]byte("audit: {sinks: [{name: siem, type: syslog, syslog: {address: 'siem:6514'}}, {name: o, type: otlp, otlp: {endpoint: 'https://c/v1/logs', headers: {X-Key: 'env:K'}}}]}"),
		func(string) string { return "s3cret" })
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Audit.Sinks[0]
	if s.Start != "all" || s.BatchSize != 256 || s.LagAlert != 10000 || s.MaxField != 4096 || s.Syslog.Network != "tls" ||
		s.Syslog.Format != "json" || s.Syslog.Facility != 10 || s.Syslog.AppName != "pwsync" {
		t.Errorf("defaults: %+v", s)
	}
	h := cfg.Audit.Sinks[1].OTLP.Headers["X-Key"]
	if h.Value() != "s3cret" || h.String() != "env:K" || strings.Contains(strings.Join([]string{h.String()}, ""), "s3cret") {
		t.Errorf("header secret: value %q, shown as %q", h.Value(), h.String())
	}
}
