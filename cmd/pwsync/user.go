package main

import (
	"context"
	"encoding/json"
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
	return showUser(ctx, conn.JS, upn, *limit, stdout)
}

func showUser(ctx context.Context, js jetstream.JetStream, upn string, limit int, out io.Writer) error {
	identity, err := natsx.Bucket(ctx, js, natsx.BucketIdentity)
	if err != nil {
		return err
	}
	users, err := natsx.Bucket(ctx, js, natsx.BucketUsers)
	if err != nil {
		return err
	}
	e, err := identity.Get(ctx, events.KeySafe("upn."+strings.ToLower(upn)))
	if natsx.IsNotFound(err) {
		fmt.Fprintf(out, "%s: no AD user with this userPrincipalName has been seen.\n", upn)
		fmt.Fprintln(out, "A cloud account without an AD user is reported, never joined by guess.")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the UPN index: %w", err)
	}
	guid := string(e.Value())
	var st rules.State
	if se, err := users.Get(ctx, events.KeySafe(guid)); err == nil {
		if err := json.Unmarshal(se.Value(), &st); err != nil {
			return fmt.Errorf("decoding state of %s: %w", guid, err)
		}
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("reading state of %s: %w", guid, err)
	}

	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	ad := st.AD
	fmt.Fprintf(w, "AD\t%s\n", ad.DN)
	fmt.Fprintf(w, "  objectGUID\t%s (immutable id %s)\n", ad.ObjectGUID, ad.ImmutableID)
	fmt.Fprintf(w, "  pwdLastSet\t%s\n", describePwdLastSet(ad.PwdLastSet))
	fmt.Fprintf(w, "  never expires / disabled\t%v / %v\n", ad.NeverExpires(), ad.Disabled())
	if t := events.FileTime(ad.ExpiryComputed); !t.IsZero() {
		fmt.Fprintf(w, "  password expires\t%s\n", t.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  in scope\t%v\n", st.InScope)
	if c := st.Cloud; c != nil {
		fmt.Fprintf(w, "Entra\t%s (%s)\n", c.UPN, c.ID)
		fmt.Fprintf(w, "  synced\t%v\n", c.SyncEnabled)
		fmt.Fprintf(w, "  passwordPolicies\t%s\n", c.PasswordPolicies)
		if !c.LastPasswordChange.IsZero() {
			fmt.Fprintf(w, "  last password change\t%s\n", c.LastPasswordChange.Format(time.RFC3339))
		}
	} else if je, err := identity.Get(ctx, events.KeySafe(guid)); err == nil {
		fmt.Fprintf(w, "Entra\tjoined by the actuator: %s\n", je.Value())
	} else {
		fmt.Fprintf(w, "Entra\tnot joined yet (no delta data and no action so far)\n")
	}
	fmt.Fprintf(w, "Pending\t")
	switch {
	case st.ChangeRequired:
		fmt.Fprintf(w, "cloud password change required by %s\n", st.RequiredByAction)
	case !st.WritebackAwait.IsZero():
		fmt.Fprintf(w, "waiting for AD to follow a cloud password change of %s\n", st.WritebackAwait.Format(time.RFC3339))
	case st.PoliciesPending != "":
		fmt.Fprintf(w, "passwordPolicies %q written, not yet seen back\n", st.PoliciesPending)
	default:
		fmt.Fprintln(w, "nothing")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	recs, err := auditOf(ctx, js, guid, limit)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nTimeline (last %d):\n", len(recs))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, r := range recs {
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

// auditOf scans the AUDIT stream for one user's records, keeping the last limit.
func auditOf(ctx context.Context, js jetstream.JetStream, guid string, limit int) ([]events.AuditRecord, error) {
	cons, err := js.OrderedConsumer(ctx, natsx.StreamAudit, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("reading audit: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading audit: %w", err)
	}
	pending := info.NumPending
	var out []events.AuditRecord
	for pending > 0 {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("reading audit: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r events.AuditRecord
			if json.Unmarshal(m.Data(), &r) == nil && r.User.ObjectGUID == guid {
				out = append(out, r)
				if len(out) > limit {
					out = out[1:]
				}
			}
		}
		if n == 0 {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		pending -= uint64(min(uint64(n), pending))
	}
	return out, nil
}

func describePwdLastSet(v int64) string {
	if v == 0 {
		return "0 (must change at next logon)"
	}
	return events.FileTime(v).Format(time.RFC3339)
}
