package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Targets say which services will run, so only their settings are required.
type Targets struct{ Ingest, Evaluator, Actuator bool }

// AllTargets runs everything in one process.
var AllTargets = Targets{Ingest: true, Evaluator: true, Actuator: true}

// Load reads path, applies defaults, resolves secrets and validates for the
// given targets. Warnings (e.g. a file with secrets readable by others) are
// returned separately so that the caller can log them.
func Load(path string, t Targets, getenv func(string) string) (Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := Parse(data, getenv)
	if err != nil {
		return Config{}, nil, fmt.Errorf("config %s: %w", path, err)
	}
	var warnings []string
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o044 != 0 && cfg.hasLiteralSecret() {
		warnings = append(warnings, fmt.Sprintf("config %s holds secrets and is readable by group or others (mode %v): chmod 600 it, or use env:/file: secrets", path, st.Mode().Perm()))
	}
	warnings = append(warnings, cfg.secretFileWarnings()...)
	warnings = append(warnings, cfg.notifyWarnings(t)...)
	warnings = append(warnings, cfg.fallbackWarnings(t)...)
	if err := cfg.Validate(t); err != nil {
		return Config{}, warnings, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, warnings, nil
}

// Parse decodes YAML strictly over the defaults and resolves secrets. It does
// not validate.
func Parse(data []byte, getenv func(string) string) (Config, error) {
	cfg := Default()
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("parsing YAML: %s", redactYAMLError(err))
	}
	if root.Kind == 0 { // empty file: defaults only
		return cfg, cfg.resolveSecrets(getenv)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if err := checkKeys(doc, reflect.TypeOf(cfg), ""); err != nil {
		return Config{}, err
	}
	if err := doc.Decode(&cfg); err != nil {
		return Config{}, cleanYAMLError(err)
	}
	for i := range cfg.AD.Domains {
		cfg.AD.Domains[i].applyDefaults()
	}
	for i := range cfg.Audit.Sinks {
		cfg.Audit.Sinks[i].applyDefaults()
	}
	return cfg, cfg.resolveSecrets(getenv)
}

// checkKeys walks the YAML mapping next to the Go type and names the first
// unknown key by its full path, e.g. `graph.clent_id: unknown key (line 4)`.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeOf(Secret{}) || t == reflect.TypeOf(time.Duration(0)):
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: must be a mapping (line %d)", orRoot(path), n.Line)
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
			}
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("%s: unknown key (line %d)", key, k.Line)
			}
			if seen[k.Value] {
				return fmt.Errorf("%s: duplicate key (line %d)", key, k.Line)
			}
			seen[k.Value] = true
			if err := checkKeys(v, ft, key); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if err := checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// cleanYAMLError turns yaml.v3's type errors into one line per problem.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return fmt.Errorf("invalid value: %s", strings.Join(te.Errors, "; "))
	}
	return fmt.Errorf("invalid value: %w", err)
}

func (c *Config) resolveSecrets(getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	for i := range c.AD.Domains {
		if err := c.AD.Domains[i].BindPassword.resolve(getenv); err != nil {
			return fmt.Errorf("ad.domains[%d].bind_password: %w", i, err)
		}
	}
	if err := c.Graph.ClientSecret.resolve(getenv); err != nil {
		return fmt.Errorf("graph.client_secret: %w", err)
	}
	if err := c.Graph.CertificatePassword.resolve(getenv); err != nil {
		return fmt.Errorf("graph.certificate_password: %w", err)
	}
	if err := c.Notify.WorkflowsWebhookURL.resolve(getenv); err != nil {
		return fmt.Errorf("notify.workflows_webhook_url: %w", err)
	}
	for i, s := range c.Audit.Sinks {
		for k, h := range s.OTLP.Headers {
			if err := h.resolve(getenv); err != nil {
				return fmt.Errorf("audit.sinks[%d].otlp.headers.%s: %w", i, k, err)
			}
			s.OTLP.Headers[k] = h
		}
	}
	return nil
}

func (c *Config) hasLiteralSecret() bool {
	lit := func(s Secret) bool { return s.ref == "literal" }
	for _, d := range c.AD.Domains {
		if lit(d.BindPassword) {
			return true
		}
	}
	for _, s := range c.Audit.Sinks {
		for _, h := range s.OTLP.Headers {
			if lit(h) {
				return true
			}
		}
	}
	return lit(c.Graph.ClientSecret) || lit(c.Graph.CertificatePassword) || lit(c.Notify.WorkflowsWebhookURL)
}

// Validate checks required and invalid values for the targets that will run.
func (c *Config) Validate(t Targets) error {
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error", "trace":
	default:
		add("log.level", "must be one of debug, info, warn, error (got %q)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console (got %q)", c.Log.Format)
	}
	if c.NATS.URL == "" && c.NATS.Embedded.DataDir == "" {
		add("nats.embedded.data_dir", "required when nats.url is empty")
	}
	if m := c.NATS.Embedded.MaxStore; m != 0 && m < 1<<20 {
		add("nats.embedded.max_store", "must be at least 1MiB (got %d bytes)", m)
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		add("nats.replicas", "must be between 1 and 5 (got %d)", c.NATS.Replicas)
	}
	if c.ShutdownTimeout <= 0 {
		add("shutdown_timeout", "must be positive")
	}
	if c.Ops.Listen == "" {
		add("ops.listen", "required (host:port of /healthz, /readyz, /metrics)")
	}
	if c.Ops.SampleInterval < time.Second {
		add("ops.sample_interval", "must be at least 1s (got %s)", c.Ops.SampleInterval)
	}
	errs = append(errs, c.Admin.validate()...)
	if c.Admin.Enabled && t.Ingest && c.Webhook.Enabled && sameListener(c.Admin.Listen, c.Webhook.Listen) {
		// The webhook faces the internet (Graph calls it); the admin API
		// must never be reachable the same way.
		add("admin.listen", "must differ from webhook.listen (%s): the admin API never shares the webhook's listener", c.Webhook.Listen)
	}
	if c.Admin.Enabled && sameListener(c.Admin.Listen, c.Ops.Listen) {
		add("admin.listen", "must differ from ops.listen (%s)", c.Ops.Listen)
	}
	errs = append(errs, validateInstance(c.Instance)...)
	errs = append(errs, c.Audit.validate(c.Graph)...)
	errs = append(errs, c.Risk.validate()...)
	if t.Ingest {
		if len(c.AD.Domains) == 0 && !c.Webhook.Enabled {
			add("ad.domains", "at least one domain is required for the ingest target")
		}
		names := map[string]bool{}
		for i, d := range c.AD.Domains {
			errs = append(errs, d.validate(fmt.Sprintf("ad.domains[%d]", i))...)
			if names[d.Name] {
				add(fmt.Sprintf("ad.domains[%d].name", i), "duplicate domain name %q", d.Name)
			}
			names[d.Name] = true
		}
	}
	if t.Evaluator {
		if c.Evaluator.Drift.Cooldown <= 0 {
			add("evaluator.drift.cooldown", "must be positive")
		}
		if c.Evaluator.Drift.PendingTimeout <= 0 {
			add("evaluator.drift.pending_timeout", "must be positive")
		}
		if c.Evaluator.Writeback.Window < 0 {
			add("evaluator.writeback.window", "must not be negative")
		}
		if c.Evaluator.ForcedChange.BackfillThreshold < 0 {
			add("evaluator.forced_change.backfill_threshold", "must not be negative (0 holds every backfill for approval)")
		}
		if r := c.Evaluator.Reevaluate; r.Enabled && r.Rate <= 0 {
			add("evaluator.reevaluate.rate", "must be positive (users per second)")
		}
		errs = append(errs, c.Evaluator.validateExpiry()...)
		for i, ou := range c.Evaluator.Scope.IncludeOUs {
			if !strings.Contains(ou, "=") {
				add(fmt.Sprintf("evaluator.scope.include_ous[%d]", i), "must be a DN (got %q)", ou)
			}
		}
	}
	if t.Ingest && c.Webhook.Enabled {
		w := c.Webhook
		if err := httpsURL(w.PublicURL); err != nil {
			add("webhook.public_url", "%v (Graph only calls HTTPS notification URLs)", err)
		}
		if (w.TLSCert == "") != (w.TLSKey == "") {
			add("webhook.tls_cert", "set both webhook.tls_cert and webhook.tls_key, or neither (TLS at the ingress)")
		}
		if w.Listen == "" {
			add("webhook.listen", "required")
		}
		if w.MaxBody < 1024 {
			add("webhook.max_body", "must be at least 1024 bytes")
		}
		if w.DeltaInterval < time.Second {
			add("webhook.delta_interval", "must be at least 1s")
		}
	}
	if c.NeedsGraph(t) {
		g := c.Graph
		if g.TenantID == "" {
			add("graph.tenant_id", "required")
		}
		if g.ClientID == "" {
			add("graph.client_id", "required")
		}
		switch {
		case !g.ClientSecret.IsSet() && g.CertificateFile == "":
			add("graph.client_secret", "required (or graph.certificate_file)")
		case g.ClientSecret.IsSet() && g.CertificateFile != "":
			add("graph.certificate_file", "set either graph.client_secret or graph.certificate_file, not both")
		}
		if err := httpsURL(g.BaseURL); err != nil {
			add("graph.base_url", "%v", err)
		}
		if err := httpsURL(g.AuthorityHost); err != nil {
			add("graph.authority_host", "%v", err)
		}
	}
	if t.Actuator {
		a := c.Actuator
		if a.Concurrency < 1 || a.Concurrency > 256 {
			add("actuator.concurrency", "must be between 1 and 256 (got %d)", a.Concurrency)
		}
		switch a.CloudManaged.Fallback {
		case "temporary_password", "chain", "none":
		default:
			add("actuator.cloud_managed.fallback", "must be temporary_password, chain or none (got %q)", a.CloudManaged.Fallback)
		}
		if a.WriteBudget < 0 || (a.WriteBudget > 0 && a.WriteWindow <= 0) {
			add("actuator.write_budget", "must be >= 0, with a positive actuator.write_window")
		}
		if a.Undo.AwaitCloud < 0 || a.Undo.AwaitCloud > 24*time.Hour {
			add("actuator.undo.await_cloud", "must be between 0s and 24h (got %s)", a.Undo.AwaitCloud)
		}
		if a.Retry.MaxAttempts < 1 {
			add("actuator.retry.max_attempts", "must be at least 1")
		}
		if a.Retry.InitialInterval <= 0 || a.Retry.MaxInterval < a.Retry.InitialInterval {
			add("actuator.retry.initial_interval", "must be positive and not above actuator.retry.max_interval")
		}
		errs = append(errs, c.Notify.validate()...)
		errs = append(errs, c.Campaigns.validate(c.Graph.Timeout)...)
	}
	return errors.Join(errs...)
}

func (d Domain) validate(key string) []error {
	var errs []error
	add := func(k, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, a...)...))
	}
	if d.Name == "" {
		add("name", "required")
	}
	if d.URL == "" && len(d.URLs) == 0 && d.Discover == nil {
		add("url", "required (one DC; or urls: [...] for several, or discover: to find them in DNS)")
	}
	if d.URL != "" {
		errs = append(errs, d.validateURL(key+".url", d.URL)...)
	}
	for i, x := range d.URLs {
		errs = append(errs, d.validateURL(fmt.Sprintf("%s.urls[%d]", key, i), x)...)
	}
	if d.Discover != nil {
		errs = append(errs, d.Discover.validate(key+".discover", d)...)
	}
	errs = append(errs, d.validateBind(key)...) // kerberos.go
	if d.BaseDN == "" {
		add("base_dn", "required (the naming context root, e.g. DC=example,DC=com)")
	}
	switch d.Mode {
	case "dirsync", "usn", "auto":
	default:
		add("mode", "must be dirsync, usn or auto (got %q)", d.Mode)
	}
	switch d.SourceAnchor {
	case "objectGUID", "ms-DS-ConsistencyGuid":
	default:
		add("source_anchor", "must be objectGUID or ms-DS-ConsistencyGuid (got %q)", d.SourceAnchor)
	}
	if d.PollInterval < 100*time.Millisecond {
		add("poll_interval", "must be at least 100ms (got %s)", d.PollInterval)
	}
	if d.PageSize < 1 || d.PageSize > 5000 {
		add("page_size", "must be between 1 and 5000 (got %d)", d.PageSize)
	}
	if d.CAFile != "" {
		if _, err := os.Stat(d.CAFile); err != nil {
			add("ca_file", "%v", err)
		}
	}
	return errs
}

func httpsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("must be an https:// URL (got %q)", s)
	}
	return nil
}

// sameListener reports whether two host:port listen addresses would bind
// the same port on a shared address (the same host, or either a wildcard).
func sameListener(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return strings.EqualFold(ha, hb) || wild(ha) || wild(hb)
}

// yamlQuoted is what YAML's syntax errors quote from the file, e.g.
// "unknown anchor 'x' referenced": an unquoted secret starting with * or &
// would be echoed into logs.
var yamlQuoted = regexp.MustCompile("'[^']*'|`[^`]*`|\"[^\"]*\"")

// redactYAMLError keeps a syntax error's line and kind, not the text it
// quotes from the file (which may be a secret).
func redactYAMLError(err error) string {
	return yamlQuoted.ReplaceAllString(err.Error(), "'…'")
}
