package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/services/evaluator/userview"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
)

// userCommand prints one user's joined AD and Entra state, pending work and
// audit timeline, read from the running pwsync's NATS (nats.url, or the
// embedded server's nats.embedded.listen).
func userCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("user", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	limit := fs.Int("history", 30, "audit records to show")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: pwsync user --config FILE <upn>")
	}
	upn := fs.Arg(0)
	cfg, _, err := config.Load(*cfgPath, config.Targets{}, os.Getenv)
	if err != nil {
		return err
	}
	url := cfg.NATS.URL
	if url == "" {
		if cfg.NATS.Embedded.Listen == "" {
			return errors.New("pwsync user reads the running pwsync's NATS: set nats.url, or nats.embedded.listen on the embedded server")
		}
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: url, Name: "pwsync-cli", CredsFile: cfg.NATS.CredsFile,
		NKeyFile: cfg.NATS.NKeyFile, CAFile: cfg.NATS.CAFile}, zerolog.Nop())
	if err != nil {
		return err
	}
	defer conn.NC.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return showUser(ctx, conn.JS, upn, policyOf(cfg), *limit, stdout)
}

func showUser(ctx context.Context, js jetstream.JetStream, upn string, p rules.Policy, limit int, out io.Writer) error {
	v, err := userview.Build(ctx, js, upn, p, clock(), limit)
	if err != nil {
		return err
	}
	if !v.Found {
		fmt.Fprintf(out, "%s: no AD user with this userPrincipalName has been seen.\n", upn)
		fmt.Fprintln(out, "A cloud account without an AD user is reported, never joined by guess.")
		return nil
	}
	st := v.State
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	ad := st.AD
	fmt.Fprintf(w, "AD\t%s\n", ad.DN)
	fmt.Fprintf(w, "  objectGUID\t%s (immutable id %s)\n", ad.ObjectGUID, ad.ImmutableID)
	fmt.Fprintf(w, "  pwdLastSet\t%s\n", describePwdLastSet(ad))
	fmt.Fprintf(w, "  never expires / disabled\t%v / %v\n", ad.NeverExpires(), ad.Disabled())
	if v.Expiry != nil {
		fmt.Fprintf(w, "  password expires\t%s (%s)\n", v.Expiry.Format(time.RFC3339), v.ExpiryWhy)
	} else {
		fmt.Fprintf(w, "  password expires\tno (%s)\n", v.ExpiryWhy)
	}
	if n := v.NextNotice; n != nil {
		what := n.Template
		if n.Enforce {
			what = strings.TrimPrefix(what+" + enforce", " + ")
		}
		fmt.Fprintf(w, "  next notice\t%s: %s\n", n.Due.Format(time.RFC3339), what)
	}
	fmt.Fprintf(w, "  in scope\t%v (%s)\n", st.InScope, v.ScopeWhy)
	if c := st.Cloud; c != nil {
		fmt.Fprintf(w, "Entra\t%s (%s)\n", c.UPN, c.ID)
		fmt.Fprintf(w, "  synced\t%v\n", c.SyncEnabled)
		fmt.Fprintf(w, "  passwordPolicies\t%s\n", c.PasswordPolicies)
		if !c.LastPasswordChange.IsZero() {
			fmt.Fprintf(w, "  last password change\t%s\n", c.LastPasswordChange.Format(time.RFC3339))
		}
	} else if v.JoinedCloudID != "" {
		fmt.Fprintf(w, "Entra\tjoined by the actuator: %s\n", v.JoinedCloudID)
	} else {
		fmt.Fprintf(w, "Entra\tnot joined yet (no delta data and no action so far)\n")
	}
	fmt.Fprintf(w, "Pending\t")
	if len(v.Pending) == 0 {
		fmt.Fprintln(w, "nothing")
	} else {
		fmt.Fprintln(w, strings.Join(v.Pending, "; "))
	}
	var queued, dead []string
	for _, q := range v.Queued {
		last := "not started"
		if q.LastStep != "" {
			last = "last: " + q.LastStep
		}
		queued = append(queued, fmt.Sprintf("%s (%s, decided %s; %s)", q.Action, q.Rule, q.Since.Format(time.RFC3339), last))
	}
	for _, d := range v.DeadLetters {
		dead = append(dead, fmt.Sprintf("%s at %s: %s (retry: the console's live view)", d.Action, d.At.Format(time.RFC3339), d.Reason))
	}
	listRows(w, "Queued actions", queued)
	listRows(w, "Dead letters", dead)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nTimeline (last %d):\n", len(v.Timeline))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, r := range v.Timeline {
		what := r.Rule
		if r.Step != "" {
			what = r.Action + " / " + r.Step
		} else if r.Kind == "action" {
			what = r.Action
		}
		status := ""
		if r.HTTPStatus != 0 {
			status = fmt.Sprint(r.HTTPStatus)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format("2006-01-02 15:04:05.000"), r.Kind, what, r.Outcome, status, r.Detail)
	}
	return tw.Flush()
}

func describePwdLastSet(ad events.ADUser) string {
	switch {
	case ad.MustChange():
		return "0 (must change at next logon)"
	case ad.PwdLastSetZero():
		return "0 (not a must-change: password never expires)"
	}
	return events.FileTime(ad.PwdLastSet).Format(time.RFC3339)
}

// listRows prints one labelled row per item, or "none".
func listRows(w io.Writer, label string, items []string) {
	if len(items) == 0 {
		items = []string{"none"}
	}
	for i, it := range items {
		if i == 0 {
			fmt.Fprintf(w, "%s\t%s\n", label, it)
		} else {
			fmt.Fprintf(w, "\t%s\n", it)
		}
	}
}
