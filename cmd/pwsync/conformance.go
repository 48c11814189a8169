package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/conformance"
	"github.com/pwsync/pwsync/services/ingest/webhook"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
)

// `pwsync conformance` runs the contract checks of services/conformance
// against the configured tenant and domains: what pwsync's own Graph
// client and LDAP code get back, judged against the documented contract.
// Read-only unless --write, and then only on the named test users.

func conformanceCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	write := fs.Bool("write", false, "allow writes on the test users and the test group (each undone); default read-only")
	testUser := fs.String("test-user", "", "UPN of a cloud-only Entra test user (read; with --write: passwordProfile flag, revoke sessions, group member, passwordPolicies)")
	testADUser := fs.String("test-ad-user", "", "sAMAccountName or UPN of an AD test user synced to Entra (read; with --write: pwdLastSet=0, then -1)")
	testGroup := fs.String("test-group", "", "Entra group ID for the member checks (default actuator.synced.pending_group_id)")
	notifyURL := fs.String("notification-url", "", "URL answering Graph's validation handshake, for the subscription check (default webhook.public_url"+webhook.PathNotifications+" when the webhook is enabled)")
	wait := fs.Duration("wait", time.Minute, "how long a write may take to show (delta, sessions, members, DirSync, notification)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, warnings, err := config.Load(*cfgPath, config.AllTargets, os.Getenv)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		return err
	}
	opts := conformance.Options{
		Write: *write, TestUser: *testUser, TestADUser: *testADUser, TestGroup: *testGroup,
		NotificationURL: *notifyURL, Wait: *wait,
		NeverExpires: cfg.Evaluator.NeverExpires.Enabled,
		MailSenders:  cfg.Notify.Enabled && len(cfg.Notify.Senders) > 0,
		Teams:        cfg.Notify.Enabled && cfg.Notify.Teams.Enabled,
		Fallback:     cfg.Actuator.CloudManaged.Fallback,
		PendingGroup: cfg.Actuator.Synced.PendingGroupID,
	}
	if opts.NotificationURL == "" && cfg.Webhook.Enabled && cfg.Webhook.PublicURL != "" {
		pub := strings.TrimRight(cfg.Webhook.PublicURL, "/")
		opts.NotificationURL, opts.LifecycleURL = pub+webhook.PathNotifications, pub+webhook.PathLifecycle
	}
	domains := make([]conformance.Domain, 0, len(cfg.AD.Domains))
	for _, d := range cfg.AD.Domains {
		domains = append(domains, conformance.Domain{Config: domainConfig(d)})
	}
	client, err := newGraphClient(cfg.Graph)
	if err != nil {
		return err
	}
	defer client.Close()
	g := &conformance.Graph{Client: client, Tracker: client, Batcher: client, Directory: client,
		Token: client.Token, BaseURL: graphBaseURL(cfg.Graph), ClientID: cfg.Graph.ClientID}
	mode := "read-only"
	if *write {
		mode = "writes allowed on the test users, each undone"
	}
	fmt.Fprintf(stdout, "pwsync conformance: %s, %d domain(s), %s\n", graphBaseURL(cfg.Graph), len(domains), mode)
	if failed := conformance.Report(stdout, conformance.Run(ctx, g, domains, opts)); failed > 0 {
		return fmt.Errorf("conformance: %d check(s) failed", failed)
	}
	return nil
}

// graphBaseURL is graph.base_url with the client's default.
func graphBaseURL(g config.Graph) string {
	if g.BaseURL == "" {
		return msgraph.DefaultGraphBaseURL
	}
	return strings.TrimRight(g.BaseURL, "/")
}
