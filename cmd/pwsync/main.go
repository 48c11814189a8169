// Command pwsync is the one binary: `pwsync run` runs ingest, evaluator and
// actuator in one process (or one of them with --target), `pwsync graphsim`
// runs the Graph simulator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pwsync/pwsync/services/actuator/notifier"
	"github.com/pwsync/pwsync/services/auditship"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/logx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

var version = "dev"

const usage = `pwsync: AD password events, enforced in Microsoft Entra ID within seconds.

Usage:
  pwsync run --config FILE [--target all|ingest|evaluator|actuator]
  pwsync config check --config FILE [--target ...]
  pwsync user --config FILE <upn>  one user: joined AD and Entra state, pending work, audit timeline
  pwsync policy check FILE         validate the configuration, print the rules in force
  pwsync policy explain [--config FILE] [--tz ZONE] <upn>
                                   which rules apply to a user and why; expiry and its source; next notice
  pwsync policy report [--config FILE]
                                   AD vs Entra password policy: each discrepancy, its consequence, the fix
  pwsync doctor --config FILE [--target ...] [--webhook-ca FILE]
                                   checks AD (TLS, bind, DirSync rights), the Graph token and its roles,
                                   NATS/JetStream and the webhook URL; one line per check, with the fix
  pwsync conformance --config FILE [--write] [--test-user UPN] [--test-ad-user NAME] [--test-group ID]
                                   the contracts pwsync relies on, checked against the real tenant and DCs
                                   (read-only unless --write; writes only the test users, undone)
  pwsync audit export --config FILE [--since 24h|7d|RFC3339] [--user UPN] [--format jsonl|csv]
                                   the audit trail from pwsync's NATS
  pwsync admin token --name NAME --roles viewer,operator,approver [--expires 720h]
                                   a new admin API token (printed once) and its config entry
  pwsync campaign <command> [flags] mass resets over the admin API (pwsync campaign -h)
  pwsync backfill status|approve|reject [ID]
                                   held backfills (above evaluator.forced_change.backfill_threshold) over the admin API
  pwsync graphsim [flags]          the Graph simulator (pwsync graphsim -h)
  pwsync version
`

func main() {
	if err := dispatch(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pwsync:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			return errors.New("usage: pwsync config check --config FILE")
		}
		return configCheck(args[2:], stdout)
	case "user":
		return userCommand(ctx, args[1:], stdout)
	case "policy":
		return policyCommand(ctx, args[1:], stdout)
	case "doctor":
		return doctorCommand(ctx, args[1:], stdout)
	case "conformance":
		return conformanceCommand(ctx, args[1:], stdout)
	case "audit":
		return auditCommand(ctx, args[1:], stdout)
	case "admin":
		return adminCommand(args[1:], stdout)
	case "campaign":
		return campaignCommand(ctx, args[1:], stdout, stderr)
	case "backfill":
		return backfillCommand(ctx, args[1:], stdout, stderr)
	case "graphsim":
		return graphsim.Main(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, "pwsync", version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// runFlags are the flags of `run` and `config check`.
type runFlags struct {
	config string
	target string
}

func parseRunFlags(name string, args []string) (runFlags, config.Targets, error) {
	var f runFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.config, "config", "pwsync.yaml", "configuration file")
	fs.StringVar(&f.target, "target", "all", "all | ingest | evaluator | actuator")
	if err := fs.Parse(args); err != nil {
		return f, config.Targets{}, err
	}
	t, err := parseTarget(f.target)
	return f, t, err
}

func parseTarget(s string) (config.Targets, error) {
	switch s {
	case "all", "":
		return config.AllTargets, nil
	case "ingest":
		return config.Targets{Ingest: true}, nil
	case "evaluator":
		return config.Targets{Evaluator: true}, nil
	case "actuator":
		return config.Targets{Actuator: true}, nil
	}
	return config.Targets{}, fmt.Errorf("--target: must be all, ingest, evaluator or actuator (got %q)", s)
}

func configCheck(args []string, stdout io.Writer) error {
	f, t, err := parseRunFlags("config check", args)
	if err != nil {
		return err
	}
	cfg, warnings, err := config.Load(f.config, t, os.Getenv)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		return err
	}
	if t.Actuator && cfg.Notify.Enabled {
		// The same check as at start: an unknown field in a template is refused.
		if _, err := notifier.LoadTemplates(cfg.Notify.TemplatesDir, cfg.Notify.DefaultLanguage); err != nil {
			return fmt.Errorf("notify templates: %w", err)
		}
	}
	if err := auditship.Check(context.Background(), cfg.Audit.Sinks); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", f.config)
	return nil
}

func runCommand(ctx context.Context, args []string, stderr io.Writer) error {
	f, t, err := parseRunFlags("run", args)
	if err != nil {
		return err
	}
	cfg, warnings, err := config.Load(f.config, t, os.Getenv)
	if err != nil {
		return err
	}
	log, err := logx.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	return run(ctx, cfg, t, log)
}
