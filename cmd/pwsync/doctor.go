package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/config"
)

// `pwsync doctor` checks, one line each, what pwsync needs from its
// environment and says how to fix what is wrong. It changes nothing.

type checkStatus string

const (
	statusPass checkStatus = "PASS"
	statusWarn checkStatus = "WARN"
	statusFail checkStatus = "FAIL"
	statusSkip checkStatus = "SKIP"
)

type checkResult struct {
	Status checkStatus
	Name   string
	Detail string
	Fix    string
}

func (r checkResult) String() string {
	// Continuation lines (several config errors) stay under their check.
	s := fmt.Sprintf("%s  %-44s %s", r.Status, r.Name, strings.ReplaceAll(r.Detail, "\n", "\n      "))
	if r.Fix != "" && r.Status != statusPass {
		s += "\n      fix: " + r.Fix
	}
	return s
}

// tokenFunc acquires a Graph token and returns the application roles in it.
type tokenFunc func(ctx context.Context) (roles []string, expires time.Time, err error)

type doctor struct {
	cfg       config.Config
	targets   config.Targets
	token     tokenFunc
	webhookCA *x509.CertPool // extra roots for the public URL check (nil = system roots)
	timeout   time.Duration  // per network check
	results   []checkResult
}

func (d *doctor) add(r checkResult) { d.results = append(d.results, r) }

func doctorCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	target := fs.String("target", "all", "all | ingest | evaluator | actuator: check what this target needs")
	webhookCA := fs.String("webhook-ca", "", "PEM CA bundle also trusted for webhook.public_url (test setups; Graph itself needs a public CA)")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each network check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, err := parseTarget(*target)
	if err != nil {
		return err
	}
	d := &doctor{targets: t, timeout: *timeout}
	if *webhookCA != "" {
		pool, err := certPool(*webhookCA, true)
		if err != nil {
			return fmt.Errorf("--webhook-ca: %w", err)
		}
		d.webhookCA = pool
	}
	if ok := d.checkConfig(*cfgPath); ok {
		d.token = graphToken(d.cfg)
		d.run(ctx)
	}
	failed := 0
	for _, r := range d.results {
		fmt.Fprintln(stdout, r)
		if r.Status == statusFail {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("doctor: %d check(s) failed", failed)
	}
	fmt.Fprintln(stdout, "all checks passed")
	return nil
}

// run runs every check after the configuration's.
func (d *doctor) run(ctx context.Context) {
	if d.targets.Ingest {
		for i, dom := range d.cfg.AD.Domains {
			d.checkDomain(ctx, fmt.Sprintf("ad.domains[%d]", i), dom)
		}
	}
	if d.targets.Actuator || (d.targets.Ingest && (d.cfg.Webhook.Enabled || d.cfg.Risk.Enabled)) {
		d.checkGraph(ctx)
	}
	if d.targets.Ingest && d.cfg.Risk.Enabled {
		d.checkRisk(ctx)
	}
	d.checkNATS(ctx)
	if d.targets.Ingest && d.cfg.Webhook.Enabled {
		d.checkWebhook(ctx)
	}
}

func (d *doctor) checkConfig(path string) bool {
	cfg, warnings, err := config.Load(path, d.targets, os.Getenv)
	if err != nil {
		d.add(checkResult{statusFail, "config", err.Error(),
			"correct the key named above in " + path + " (deployments/config/pwsync.example.yaml documents every key); `pwsync config check` re-checks it"})
		return false
	}
	d.cfg = cfg
	d.add(checkResult{Status: statusPass, Name: "config", Detail: path + " loads and validates"})
	for _, w := range warnings {
		name, fix := "config", "see the warning; secrets belong in env:NAME or file:PATH"
		switch {
		case strings.Contains(w, "notify.enabled is off"):
			fix = "turn notify on (notify.enabled, notify.senders) or those notices off, as the warning says"
		case strings.Contains(w, "actuator.cloud_managed.fallback"):
			name = "must-change fallback"
			fix = "set actuator.synced.pending_group_id (a group that Conditional Access blocks until the password changes), " +
				"or actuator.cloud_managed.fallback: temporary_password; the README's \"When the flag does not take\" says what the user sees with each"
		}
		d.add(checkResult{statusWarn, name, w, fix})
	}
	return true
}

func isCertError(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var tv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &tv)
}

func certPool(path string, withSystem bool) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if withSystem {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
