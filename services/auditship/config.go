package auditship

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/pwsync/pwsync/shared/config"
)

// Entra is what a Sentinel sink borrows from the Graph client: the app's
// credential and an HTTP client trusting graph.ca_file.
type Entra struct {
	Credential azcore.TokenCredential
	HTTP       *http.Client
}

// Targets builds the configured sinks. entra may be nil when no sink is of
// type sentinel (config.Audit.NeedsEntraCredential).
func Targets(ctx context.Context, sinks []config.AuditSink, entra *Entra, version string) ([]Target, error) {
	var out []Target
	for _, c := range sinks {
		sink, err := newSink(ctx, c, entra, version)
		if err != nil {
			for _, t := range out {
				_ = t.Sink.Close()
			}
			return nil, fmt.Errorf("audit sink %s: %w", c.Name, err)
		}
		out = append(out, Target{Name: c.Name, Kinds: c.Kinds, Start: c.Start, BatchSize: c.BatchSize,
			LagAlert: c.LagAlert, Sink: sink})
	}
	return out, nil
}

func newSink(ctx context.Context, c config.AuditSink, entra *Entra, version string) (Sink, error) {
	switch c.Type {
	case "syslog":
		sc := c.Syslog
		host := sc.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		cfg := SyslogConfig{Network: sc.Network, Address: sc.Address, Format: sc.Format, MaxField: c.MaxField, Version: version,
			Header: syslogHeader{Facility: sc.Facility, Hostname: host, AppName: sc.AppName}}
		if sc.Network == "tls" {
			name := sc.ServerName
			if name == "" {
				name, _, _ = net.SplitHostPort(sc.Address)
			}
			tc, err := SyslogTLS(sc.CAFile, name, sc.CertFile, sc.KeyFile)
			if err != nil {
				return nil, err
			}
			cfg.TLS = tc
		}
		return NewSyslog(cfg), nil
	case "sentinel":
		if entra == nil || entra.Credential == nil {
			return nil, fmt.Errorf("sentinel needs the Entra app credentials (graph.*)")
		}
		sc := c.Sentinel
		return NewSentinel(SentinelConfig{Endpoint: sc.Endpoint, RuleID: sc.RuleID, Stream: sc.Stream, APIVersion: sc.APIVersion,
			Scope: sc.Scope, Credential: entra.Credential, HTTP: entra.HTTP, MaxField: c.MaxField}), nil
	case "otlp":
		oc := c.OTLP
		headers := map[string]string{}
		for k, v := range oc.Headers {
			headers[k] = v.Value()
		}
		cfg := OTLPConfig{Endpoint: oc.Endpoint, Headers: headers, Timeout: oc.Timeout, MaxField: c.MaxField, Version: version}
		if oc.CAFile != "" {
			pem, err := os.ReadFile(oc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("otlp ca_file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("otlp ca_file %s: no PEM certificate in it", oc.CAFile)
			}
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
		}
		return NewOTLP(ctx, cfg)
	}
	return nil, fmt.Errorf("unknown sink type %q", c.Type)
}

// Check builds every sink that needs no credential (syslog, OTLP), without
// connecting: unreadable CA bundles and client certificates are found by
// `pwsync config check` rather than at start.
func Check(ctx context.Context, sinks []config.AuditSink) error {
	for _, c := range sinks {
		if c.Type == "sentinel" {
			continue // its credential is graph.*'s, checked there
		}
		sink, err := newSink(ctx, c, nil, "check")
		if err != nil {
			return fmt.Errorf("audit sink %s: %w", c.Name, err)
		}
		_ = sink.Close()
	}
	return nil
}
