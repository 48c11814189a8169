package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"time"
)

// Audit configures shipping the audit trail to SIEMs (services/auditship).
type Audit struct {
	Sinks []AuditSink `yaml:"sinks"`
}

// AuditSink is one SIEM destination, fed by its own durable consumer on
// the AUDIT stream.
type AuditSink struct {
	// Name is the sink's consumer (audit-sink-NAME) and lease: renaming a
	// sink starts it over.
	Name string `yaml:"name"`
	Type string `yaml:"type"` // syslog | sentinel | otlp
	// Kinds filters the record kinds (decision, step, action, admin, ...); empty = all.
	Kinds []string `yaml:"kinds"`
	// Start: where a new sink starts: all (the whole retained trail, default) or new.
	Start string `yaml:"start"`
	// BatchSize: records per send, and what is in flight unacknowledged.
	BatchSize int `yaml:"batch_size"`
	// LagAlert: a backlog above this many records alerts the admins once
	// per episode; 0 = log only.
	LagAlert int `yaml:"lag_alert"`
	// MaxField: longer free-text values (detail) are cut to this many
	// bytes, marked "…[truncated]".
	MaxField int `yaml:"max_field"`

	Syslog   SyslogSink   `yaml:"syslog"`
	Sentinel SentinelSink `yaml:"sentinel"`
	OTLP     OTLPSink     `yaml:"otlp"`
}

// SyslogSink: RFC 5424 over TCP with TLS (RFC 5425 framing) or UDP (RFC 5426).
type SyslogSink struct {
	Network string `yaml:"network"` // tls (default) | udp | tcp (plain, loopback only)
	Address string `yaml:"address"` // host:port
	Format  string `yaml:"format"`  // json (default) | cef
	// CAFile: the SIEM's CA bundle; empty = the system roots.
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"` // default: Address's host
	// CertFile/KeyFile: an optional client certificate (mutual TLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Facility int    `yaml:"facility"` // 0-23; default 10 (authpriv)
	AppName  string `yaml:"app_name"` // default pwsync
	Hostname string `yaml:"hostname"` // default: os.Hostname
}

// SentinelSink: Azure Monitor's Logs Ingestion API (Microsoft Sentinel).
// The token comes from graph.* (the same Entra app), scope
// https://monitor.azure.com/.default.
type SentinelSink struct {
	// Endpoint: the data collection endpoint (or the DCR's own logs ingestion endpoint).
	Endpoint   string `yaml:"endpoint"`
	RuleID     string `yaml:"rule_id"` // the DCR's immutable ID, dcr-...
	Stream     string `yaml:"stream"`  // e.g. Custom-PwsyncAudit_CL
	APIVersion string `yaml:"api_version"`
	// Scope: the token scope; the default suits Azure's public cloud.
	Scope string `yaml:"scope"`
}

// OTLPSink: OpenTelemetry logs over OTLP/HTTP (protobuf).
type OTLPSink struct {
	// Endpoint: the full logs URL, e.g. https://collector:4318/v1/logs.
	Endpoint string            `yaml:"endpoint"`
	Headers  map[string]Secret `yaml:"headers"`
	CAFile   string            `yaml:"ca_file"`
	Timeout  time.Duration     `yaml:"timeout"`
}

// auditKind is a record kind as it appears in a subject (audit.KIND).
var auditKind = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)

// sinkName is safe in a consumer and lease name.
var sinkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// applyDefaults fills a sink's defaults (Parse, after decoding).
func (s *AuditSink) applyDefaults() {
	if s.Start == "" {
		s.Start = "all"
	}
	if s.BatchSize == 0 {
		s.BatchSize = 256
	}
	if s.LagAlert == 0 {
		s.LagAlert = 10000
	}
	if s.MaxField == 0 {
		s.MaxField = 4096
	}
	if s.Syslog.Network == "" {
		s.Syslog.Network = "tls"
	}
	if s.Syslog.Format == "" {
		s.Syslog.Format = "json"
	}
	if s.Syslog.Facility == 0 {
		s.Syslog.Facility = 10
	}
	if s.Syslog.AppName == "" {
		s.Syslog.AppName = "pwsync"
	}
	if s.Sentinel.APIVersion == "" {
		s.Sentinel.APIVersion = "2023-01-01"
	}
	if s.Sentinel.Scope == "" {
		s.Sentinel.Scope = "https://monitor.azure.com/.default"
	}
	if s.OTLP.Timeout == 0 {
		s.OTLP.Timeout = 10 * time.Second
	}
}

// NeedsEntraCredential reports whether a sink takes its token from graph.*.
func (a Audit) NeedsEntraCredential() bool {
	for _, s := range a.Sinks {
		if s.Type == "sentinel" {
			return true
		}
	}
	return false
}

func (a Audit) validate(g Graph) []error {
	var errs []error
	if a.NeedsEntraCredential() {
		// The sentinel sink's token comes from the Graph app, whatever targets run.
		if g.TenantID == "" || g.ClientID == "" || (!g.ClientSecret.IsSet() && g.CertificateFile == "") {
			errs = append(errs, fmt.Errorf("audit.sinks: a sentinel sink takes its token from the Entra app: set graph.tenant_id, graph.client_id and graph.client_secret (or graph.certificate_file)"))
		}
		if err := httpsURL(g.AuthorityHost); err != nil {
			errs = append(errs, fmt.Errorf("graph.authority_host: %v", err))
		}
	}
	names := map[string]bool{}
	for i, s := range a.Sinks {
		key := fmt.Sprintf("audit.sinks[%d]", i)
		add := func(k, format string, v ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, v...)...))
		}
		switch {
		case !sinkName.MatchString(s.Name):
			add("name", "must be 1-32 of a-z, 0-9, _ and - (got %q)", s.Name)
		case names[s.Name]:
			add("name", "duplicate sink name %q", s.Name)
		}
		names[s.Name] = true
		for j, k := range s.Kinds {
			if !auditKind.MatchString(k) {
				add(fmt.Sprintf("kinds[%d]", j), "must be a record kind such as decision, step, action or admin (got %q)", k)
			}
		}
		if s.Start != "all" && s.Start != "new" {
			add("start", "must be all or new (got %q)", s.Start)
		}
		if s.BatchSize < 1 || s.BatchSize > 5000 {
			add("batch_size", "must be between 1 and 5000 (got %d)", s.BatchSize)
		}
		if s.LagAlert < 0 {
			add("lag_alert", "must not be negative")
		}
		if s.MaxField < 256 || s.MaxField > 60000 {
			add("max_field", "must be between 256 and 60000 bytes (got %d)", s.MaxField)
		}
		switch s.Type {
		case "syslog":
			errs = append(errs, s.Syslog.validate(key+".syslog")...)
		case "sentinel":
			errs = append(errs, s.Sentinel.validate(key+".sentinel")...)
		case "otlp":
			errs = append(errs, s.OTLP.validate(key+".otlp")...)
		default:
			add("type", "must be syslog, sentinel or otlp (got %q)", s.Type)
		}
	}
	return errs
}

func (s SyslogSink) validate(key string) []error {
	var errs []error
	add := func(k, format string, v ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, v...)...))
	}
	switch s.Network {
	case "tls", "udp":
	case "tcp":
		if host, _, err := net.SplitHostPort(s.Address); err == nil && !loopbackHost(host) {
			add("network", "plain tcp sends the audit trail in clear: use tls (tcp is for a relay on loopback only)")
		}
	default:
		add("network", "must be tls, udp or tcp (got %q)", s.Network)
	}
	if _, _, err := net.SplitHostPort(s.Address); err != nil {
		add("address", "must be host:port (got %q)", s.Address)
	}
	if s.Format != "json" && s.Format != "cef" {
		add("format", "must be json or cef (got %q)", s.Format)
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		add("cert_file", "set both cert_file and key_file, or neither")
	}
	for k, f := range map[string]string{"ca_file": s.CAFile, "cert_file": s.CertFile, "key_file": s.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				add(k, "%v", err)
			}
		}
	}
	if s.Facility < 0 || s.Facility > 23 {
		add("facility", "must be between 0 and 23 (got %d)", s.Facility)
	}
	return errs
}

func (s SentinelSink) validate(key string) []error {
	var errs []error
	add := func(k, format string, v ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, v...)...))
	}
	if err := httpsURL(s.Endpoint); err != nil {
		add("endpoint", "%v", err)
	}
	if !dcrID.MatchString(s.RuleID) {
		add("rule_id", "must be the DCR's immutable ID, dcr- and 32 hex digits (got %q)", s.RuleID)
	}
	if !dcrStream.MatchString(s.Stream) {
		add("stream", "must be a DCR stream name such as Custom-PwsyncAudit_CL (got %q)", s.Stream)
	}
	return errs
}

func (s OTLPSink) validate(key string) []error {
	var errs []error
	u, err := url.Parse(s.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("%s.endpoint: must be an http(s):// URL such as https://collector:4318/v1/logs", key))
	} else if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		errs = append(errs, fmt.Errorf("%s.endpoint: plain http sends the audit trail in clear: use https (http is for a collector on loopback only)", key))
	}
	if s.CAFile != "" {
		if _, err := os.Stat(s.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("%s.ca_file: %v", key, err))
		}
	}
	if s.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.timeout: must be positive", key))
	}
	return errs
}

func loopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

var (
	dcrID     = regexp.MustCompile(`^dcr-[0-9a-fA-F]{32}$`)
	dcrStream = regexp.MustCompile(`^(Custom|Microsoft)-[A-Za-z0-9_]{1,60}$`)
)
