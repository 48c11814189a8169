package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/console"
	"github.com/pwsync/pwsync/services/evaluator"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/natsx"
)

// newAdminServer builds the admin API from config and binds its listener, so
// that a taken port stops start-up. Routes are added by the caller.
func newAdminServer(a config.Admin, conn *natsx.Conn, log zerolog.Logger) (*adminapi.Server, error) {
	var tokens []adminapi.Token
	for _, t := range a.Tokens {
		roles := make([]adminapi.Role, len(t.Roles))
		for i, r := range t.Roles {
			roles[i] = adminapi.Role(r)
		}
		tokens = append(tokens, adminapi.Token{Name: t.Name, SHA256: t.SHA256, Roles: roles, ExpiresAt: t.Expiry()})
	}
	s, err := adminapi.New(adminapi.Config{Listen: a.Listen, TLSCert: a.TLSCert, TLSKey: a.TLSKey,
		AllowPlain: a.AllowPlain, MaxBody: a.MaxBody, Tokens: tokens},
		adminapi.Deps{Audit: audit.NewWriter(natsx.NewPublisher(conn.JS), nil), Log: log})
	if err != nil {
		return nil, err
	}
	if err := s.Listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// adminCommand: `pwsync admin token --name N --roles operator,approver`.
func adminCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "token" {
		return errors.New("usage: pwsync admin token --name NAME --roles viewer|operator|approver[,...] [--expires 720h]")
	}
	fs := flag.NewFlagSet("admin token", flag.ContinueOnError)
	name := fs.String("name", "", "who the token is for (shown in the audit)")
	rolesFlag := fs.String("roles", "viewer", "comma-separated: viewer, operator, approver")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0 = no expiry)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name: required")
	}
	roles, err := adminapi.ParseRoles(*rolesFlag)
	if err != nil {
		return fmt.Errorf("--roles: %w", err)
	}
	tok, hash, err := adminapi.NewToken()
	if err != nil {
		return err
	}
	var exp time.Time
	if *expires > 0 {
		exp = time.Now().Add(*expires).Truncate(time.Second)
	}
	fmt.Fprintf(stdout, "Token for %s (shown once; pwsync stores only its hash):\n\n  %s\n\n", *name, tok)
	fmt.Fprintf(stdout, "Add this to the configuration and restart pwsync:\n\n%s", adminapi.ConfigSnippet(*name, hash, roles, exp))
	return nil
}

// registerAdminRoutes adds the read endpoints and the console.
func registerAdminRoutes(s *adminapi.Server, conn *natsx.Conn, cfg config.Config, log zerolog.Logger) {
	loc, err := time.LoadLocation(cfg.Evaluator.Expiry.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	console.Register(s, console.Deps{JS: conn.JS, Policy: policyOf(cfg), Location: loc, Now: clock,
		Log: log.With().Str("service", "admin").Logger()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gate, err := evaluator.NewGate(ctx, conn.JS, evaluator.GateConfig{Threshold: cfg.Evaluator.ForcedChange.BackfillThreshold},
		clock, log.With().Str("service", "admin").Logger())
	if err != nil {
		log.Error().Err(err).Msg("backfill approval API not available")
		return
	}
	evaluator.RegisterBackfill(s, gate)
}
