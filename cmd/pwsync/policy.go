package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/policy"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstore"
)

const policyUsage = `usage:
  pwsync policy check FILE                       validate the configuration and print the rules in force
  pwsync policy explain [--config FILE] [--tz ZONE] <upn>
                                                 which rules apply to the user and why, expiry, next notice
  pwsync policy report [--config FILE]           AD vs Entra password policy discrepancies and their fixes`

func policyCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(policyUsage)
	}
	switch args[0] {
	case "check":
		return policyCheck(args[1:], stdout)
	case "explain":
		return policyExplain(ctx, args[1:], stdout)
	case "report":
		return policyReport(ctx, args[1:], stdout)
	}
	return fmt.Errorf("unknown policy command %q\n%s", args[0], policyUsage)
}

func policyCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (or give it as the argument)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := *cfgPath
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	if path == "" {
		return errors.New("usage: pwsync policy check FILE")
	}
	cfg, warnings, err := config.Load(path, config.Targets{Evaluator: true}, os.Getenv)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	policy.Describe(stdout, policyOf(cfg))
	return nil
}

func policyExplain(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	tz := fs.String("tz", "", "time zone to show times in (default evaluator.expiry.time_zone)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: pwsync policy explain [--config FILE] [--tz ZONE] <upn>")
	}
	cfg, _, err := config.Load(*cfgPath, config.Targets{Evaluator: true}, os.Getenv)
	if err != nil {
		return err
	}
	zone := cfg.Evaluator.Expiry.TimeZone
	if *tz != "" {
		zone = *tz
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return fmt.Errorf("--tz %q: %w", zone, err)
	}
	js, closeNATS, err := cliNATS(cfg)
	if err != nil {
		return err
	}
	defer closeNATS()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, found, err := stateByUPN(ctx, js, fs.Arg(0))
	if err != nil {
		return err
	}
	if !found {
		fmt.Fprintf(stdout, "%s: no AD user with this userPrincipalName has been seen by pwsync.\n", fs.Arg(0))
		return nil
	}
	p := policyOf(cfg)
	f := policy.Facts{Now: clock(), Loc: loc, Notify: &cfg.Notify, Ledger: policy.KVLedger(ctx, js)}
	cloudID := ""
	if st.Cloud != nil && !st.Cloud.Removed {
		cloudID = st.Cloud.ID
	} else if f.JoinedCloudID, err = joinedCloudID(ctx, js, st.AD.ObjectGUID); err != nil {
		fmt.Fprintf(stdout, "warning: %v\n", err)
	} else {
		cloudID = f.JoinedCloudID
	}
	if len(p.IncludeEntraGroups) > 0 && cloudID != "" {
		if f.Entra, err = readEntraMembership(ctx, cfg.Graph, p.IncludeEntraGroups, cloudID); err != nil {
			fmt.Fprintf(stdout, "warning: %v\n", err)
		}
	}
	policy.Explain(stdout, p, st, f)
	return nil
}

// joinedCloudID is the cloud account the actuator joined to the AD user,
// as the user page shows it: explain and the console agree before delta
// query brings the cloud side.
func joinedCloudID(ctx context.Context, js jetstream.JetStream, guid string) (string, error) {
	store, err := userstore.Open(ctx, js)
	if err != nil {
		return "", err
	}
	return store.JoinedCloudID(ctx, guid)
}

func readEntraMembership(ctx context.Context, g config.Graph, groups []string, cloudID string) (policy.EntraMembership, error) {
	client, err := newGraphClient(g)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	return entraMembership(ctx, client, groups, cloudID)
}

func policyReport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy report", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, _, err := config.Load(*cfgPath, config.Targets{Actuator: true, Evaluator: true}, os.Getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var ads []events.ADPolicy
	for _, d := range cfg.AD.Domains {
		ap, err := adwatch.ReadPolicy(ctx, domainConfig(d))
		if err != nil {
			return fmt.Errorf("reading the password policy of %s: %w", d.Name, err)
		}
		ads = append(ads, ap)
	}
	client, err := newGraphClient(cfg.Graph)
	if err != nil {
		return err
	}
	defer client.Close()
	var t policy.Tenant
	if t.Domains, err = client.Domains(ctx); err != nil {
		return fmt.Errorf("reading Entra domains (needs Domain.Read.All): %w", err)
	}
	if t.Sync, err = client.OnPremisesSync(ctx); err != nil {
		return fmt.Errorf("reading onPremisesSynchronization (needs OnPremDirectorySynchronization.Read.All): %w", err)
	}
	t.RiskReset = readRiskReset(ctx, client)
	var counts policy.UserCounts
	if js, closeNATS, err := cliNATS(cfg); err == nil {
		defer closeNATS()
		// the client retries a NATS that does not answer: do not wait the whole minute
		sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
		defer scancel()
		states, err := allStates(sctx, js)
		if err == nil {
			counts = policy.CountUsers(states)
		} else {
			fmt.Fprintf(stdout, "(users not read from pwsync's state: %v)\n", err)
		}
	} else {
		fmt.Fprintf(stdout, "(users not read from pwsync's state: %v)\n", err)
	}
	policy.PrintFacts(stdout, ads, t, counts)
	policy.Print(stdout, policy.Analyse(policyOf(cfg), ads, t, counts))
	return nil
}

// readRiskReset reads Identity Protection's "Allow on-premises password
// change to reset user risk". The permission is optional, so a failure is
// reported as unknown, with why, and never fails the report.
func readRiskReset(ctx context.Context, r graph.RiskPolicyReader) *policy.RiskReset {
	p, err := r.IdentityProtectionPolicy(ctx)
	switch {
	case err == nil:
		return &policy.RiskReset{On: p.UserRiskClearedOnPasswordReset}
	case graph.StatusOf(err) == http.StatusForbidden:
		return &policy.RiskReset{Unknown: "Graph answered 403: the app needs Policy.Read.IdentityProtection and the tenant Entra ID P2; " + err.Error()}
	case graph.IsNotFound(err):
		return &policy.RiskReset{Unknown: "Graph answered 404: this cloud has no beta identityProtection/policy; " + err.Error()}
	}
	return &policy.RiskReset{Unknown: err.Error()}
}

// cliNATS connects to the running pwsync's NATS (nats.url, or the embedded
// server's nats.embedded.listen).
func cliNATS(cfg config.Config) (jetstream.JetStream, func(), error) {
	url := cfg.NATS.URL
	if url == "" {
		if cfg.NATS.Embedded.Listen == "" {
			return nil, nil, errors.New("reading pwsync's state needs its NATS: set nats.url, or nats.embedded.listen on the embedded server")
		}
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: url, Name: "pwsync-cli", CredsFile: cfg.NATS.CredsFile,
		NKeyFile: cfg.NATS.NKeyFile, CAFile: cfg.NATS.CAFile}, zerolog.Nop())
	if err != nil {
		return nil, nil, err
	}
	return conn.JS, conn.NC.Close, nil
}

func stateByUPN(ctx context.Context, js jetstream.JetStream, upn string) (rules.State, bool, error) {
	store, err := userstore.Open(ctx, js)
	if err != nil {
		return rules.State{}, false, err
	}
	guid, err := store.GUIDByUPN(ctx, upn)
	if err != nil || guid == "" {
		return rules.State{}, false, err
	}
	return store.State(ctx, guid)
}

func allStates(ctx context.Context, js jetstream.JetStream) ([]rules.State, error) {
	store, err := userstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	var out []rules.State
	err = store.EachState(ctx, func(st rules.State) bool {
		out = append(out, st)
		return true
	})
	return out, err
}
