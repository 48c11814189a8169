package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/adminapi"
)

const campaignUsage = `Usage: pwsync campaign <command> [flags]

  list
  create   --name NAME [--reason TEXT] [--domain NAME] selectors... actions...
           selectors (a union): --ad-group DN, --ou DN, --ldap-filter FILTER, --entra-group ID,
             --upn UPN, --csv FILE (UPN column, header optional), --all
           exclusions: --exclude-ad-group, --exclude-ou, --exclude-ldap-filter, --exclude-entra-group,
             --exclude-upn, --exclude-csv
           actions: --require-change --revoke --notify   (or --spec FILE with a JSON spec)
             --confirm-compromised  also mark the targets compromised in Entra ID Protection
                                    (Entra ID P2, IdentityRiskyUser.ReadWrite.All)
  preview  ID        resolve the selection; nothing is written
  approve  ID        approver role; not the creator
  start|pause|resume|cancel ID
  status   ID [--follow] [--interval 1s]
  report   ID [--format csv|json] [--out FILE]

Admin API: --admin-url/--token/--ca-file or PWSYNC_ADMIN_URL, PWSYNC_ADMIN_TOKEN (token may be file:PATH), PWSYNC_ADMIN_CA.
`

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// adminFlags declares the admin API's connection flags on fs; the returned
// function builds the client from them once fs is parsed.
func adminFlags(fs *flag.FlagSet) func() (*adminapi.Client, error) {
	adminURL := fs.String("admin-url", os.Getenv("PWSYNC_ADMIN_URL"), "admin API base URL (https://host:port)")
	token := fs.String("token", os.Getenv("PWSYNC_ADMIN_TOKEN"), "bearer token, or file:PATH")
	caFile := fs.String("ca-file", os.Getenv("PWSYNC_ADMIN_CA"), "CA of the admin listener's certificate")
	return func() (*adminapi.Client, error) {
		c, err := adminapi.NewClient(*adminURL, *token, *caFile)
		if err != nil {
			return nil, fmt.Errorf("%w (set --admin-url and --token, or PWSYNC_ADMIN_URL and PWSYNC_ADMIN_TOKEN)", err)
		}
		return c, nil
	}
}

func campaignCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, campaignUsage)
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("campaign "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminClient := adminFlags(fs)

	var spec campaign.Spec
	var inc, exc struct{ adGroups, ous, entra, upns, csvs multi }
	var specFile string
	follow := fs.Bool("follow", false, "status: follow until the campaign ends")
	interval := fs.Duration("interval", time.Second, "status --follow: refresh interval")
	format := fs.String("format", "csv", "report: csv or json")
	out := fs.String("out", "", "report: write to this file instead of stdout")
	if cmd == "create" {
		fs.StringVar(&spec.Name, "name", "", "campaign name")
		fs.StringVar(&spec.Reason, "reason", "", "why (incident number)")
		fs.StringVar(&spec.Domain, "domain", "", "AD domain (ad.domains[].name); default the first")
		fs.Var(&inc.adGroups, "ad-group", "AD group DN (nested members count); repeatable")
		fs.Var(&inc.ous, "ou", "OU DN; repeatable")
		fs.StringVar(&spec.Include.LDAPFilter, "ldap-filter", "", "LDAP filter, ANDed with the user filter")
		fs.Var(&inc.entra, "entra-group", "Entra group object ID (transitive members); repeatable")
		fs.Var(&inc.upns, "upn", "UPN; repeatable")
		fs.Var(&inc.csvs, "csv", "CSV or text file of UPNs; repeatable")
		fs.BoolVar(&spec.Include.AllInScope, "all", false, "every user in scope")
		fs.Var(&exc.adGroups, "exclude-ad-group", "exclude members of this AD group")
		fs.Var(&exc.ous, "exclude-ou", "exclude users below this OU")
		fs.StringVar(&spec.Exclude.LDAPFilter, "exclude-ldap-filter", "", "exclude the users this LDAP filter matches (validated like --ldap-filter)")
		fs.Var(&exc.entra, "exclude-entra-group", "exclude members of this Entra group")
		fs.Var(&exc.upns, "exclude-upn", "exclude this UPN")
		fs.Var(&exc.csvs, "exclude-csv", "exclude the UPNs of this file")
		fs.BoolVar(&spec.Actions.RequireChange, "require-change", false, "must change password (AD pwdLastSet=0 / cloud flag)")
		fs.BoolVar(&spec.Actions.RevokeSessions, "revoke", false, "revoke sign-in sessions (cloud-managed users)")
		fs.BoolVar(&spec.Actions.Notify, "notify", false, "send the password-reset notice (cloud-managed users)")
		fs.BoolVar(&spec.Actions.ConfirmCompromised, "confirm-compromised", false,
			"also mark every target with a cloud account compromised in Entra ID Protection, so the tenant's user-risk policies apply "+
				"(Entra ID P2, IdentityRiskyUser.ReadWrite.All)")
		fs.StringVar(&specFile, "spec", "", "JSON spec file (instead of the flags)")
	}
	// Flags may come after the ID too (pwsync campaign report ID --format json).
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	client, err := adminClient()
	if err != nil {
		return err
	}
	id := ""
	if cmd != "list" && cmd != "create" {
		if len(positional) != 1 {
			return fmt.Errorf("usage: pwsync campaign %s ID", cmd)
		}
		id = url.PathEscape(positional[0])
	}
	base := "/api/v1/campaigns"
	switch cmd {
	case "list":
		var res struct {
			Campaigns []campaign.Campaign `json:"campaigns"`
		}
		if err := client.Do(ctx, http.MethodGet, base, nil, &res); err != nil {
			return err
		}
		for _, c := range res.Campaigns {
			fmt.Fprintf(stdout, "%s  %-10s %6d users  %s (by %s)\n", c.ID, c.State, c.Targets, c.Spec.Name, c.CreatedBy)
		}
		return nil
	case "create":
		if specFile != "" {
			b, err := os.ReadFile(specFile)
			if err != nil {
				return err
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&spec); err != nil {
				return fmt.Errorf("%s: %w", specFile, err)
			}
		}
		if err := fillSelector(&spec.Include, inc.adGroups, inc.ous, inc.entra, inc.upns, inc.csvs, stderr); err != nil {
			return err
		}
		if err := fillSelector(&spec.Exclude, exc.adGroups, exc.ous, exc.entra, exc.upns, exc.csvs, stderr); err != nil {
			return err
		}
		var c campaign.Campaign
		if err := client.Do(ctx, http.MethodPost, base, spec, &c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created %s (%s); next: pwsync campaign preview %s\n", c.ID, c.State, c.ID)
		return nil
	case "preview":
		var c campaign.Campaign
		if err := client.Do(ctx, http.MethodPost, base+"/"+id+"/preview", struct{}{}, &c); err != nil {
			return err
		}
		var v campaign.PreviewView
		if err := client.Do(ctx, http.MethodGet, base+"/"+id+"/preview", nil, &v); err != nil {
			return err
		}
		printPreview(stdout, c, v.Details)
		return nil
	case "approve", "start", "pause", "resume", "cancel":
		var c campaign.Campaign
		if err := client.Do(ctx, http.MethodPost, base+"/"+id+"/"+cmd, struct{}{}, &c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", c.ID, c.State)
		return nil
	case "status":
		return followStatus(ctx, client, base+"/"+id, *follow, *interval, stdout)
	case "report":
		if *format != "csv" && *format != "json" {
			return errors.New("--format: csv or json")
		}
		resp, err := client.Raw(ctx, http.MethodGet, base+"/"+id+"/report?format="+*format, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		w := stdout
		if *out != "" {
			f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		_, err = io.Copy(w, resp.Body)
		return err
	}
	fmt.Fprint(stderr, campaignUsage)
	return fmt.Errorf("unknown campaign command %q", cmd)
}

func fillSelector(s *campaign.Selector, adGroups, ous, entra, upns, csvs multi, stderr io.Writer) error {
	s.ADGroups = append(s.ADGroups, adGroups...)
	s.OUs = append(s.OUs, ous...)
	s.EntraGroups = append(s.EntraGroups, entra...)
	s.UPNs = append(s.UPNs, upns...)
	for _, path := range csvs {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		list, problems, err := campaign.ParseUPNs(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, p := range problems {
			fmt.Fprintf(stderr, "%s:%d: skipped %q: %s\n", path, p.Line, p.Value, p.Reason)
		}
		s.UPNs = append(s.UPNs, list...)
	}
	return nil
}

func printPreview(w io.Writer, c campaign.Campaign, d campaign.Details) {
	p := c.Preview
	writes := p.Writes()
	fmt.Fprintf(w, "campaign %s %q: %d users (AD write %d, cloud write %d)\n", c.ID, c.Spec.Name, p.Total, writes[campaign.WriteAD], writes[campaign.WriteCloud])
	for _, st := range []campaign.Step{campaign.StepADMustChange, campaign.StepCloudMustChange, campaign.StepVerifyMustChange, campaign.StepRevoke,
		campaign.StepNotify, campaign.StepConfirmCompromised} {
		if n := p.ByStep[st]; n > 0 {
			fmt.Fprintf(w, "  %-18s %d\n", st, n)
		}
	}
	if v := c.Verify; v != nil && p.ByStep[campaign.StepVerifyMustChange] > 0 {
		fmt.Fprintf(w, "  (must_change is read back; a flag Graph accepted but did not set gets the fallback: %s)\n", v.Fallback)
	}
	if c.Spec.Actions.ConfirmCompromised {
		fmt.Fprintf(w, "  (confirm_compromised is on: the targets are marked compromised in Entra ID Protection and the tenant's user-risk "+
			"policies apply; needs Entra ID P2 and IdentityRiskyUser.ReadWrite.All, else the mark fails and the resets go on; "+
			"%d without a known cloud account are not marked)\n", p.Total-p.ByStep[campaign.StepConfirmCompromised])
	}
	fmt.Fprintln(w, "sample:")
	for _, t := range p.Sample {
		fmt.Fprintf(w, "  %-11s %s\n", t.Kind.Write(), t.UPN)
	}
	if len(p.Excluded) > 0 {
		fmt.Fprintln(w, "excluded:")
		for reason, n := range p.Excluded {
			fmt.Fprintf(w, "  %5d  %s\n", n, reason)
		}
		for i, e := range d.Excluded {
			if i == 50 {
				fmt.Fprintf(w, "  ... %d more (pwsync campaign report %s --format json)\n", len(d.Excluded)-50, c.ID)
				break
			}
			fmt.Fprintf(w, "    %s: %s\n", e.UPN, e.Reason)
		}
	}
	if p.Unmatched > 0 {
		fmt.Fprintf(w, "matched nobody (%d):\n", p.Unmatched)
		for i, u := range d.Unmatched {
			if i == 50 {
				fmt.Fprintf(w, "  ... %d more\n", len(d.Unmatched)-50)
				break
			}
			fmt.Fprintf(w, "  %s\n", u)
		}
	}
	switch {
	case p.NeedsApproval:
		fmt.Fprintf(w, "above %d users: a second person with the approver role must run: pwsync campaign approve %s\n", p.ApprovalThreshold, c.ID)
	default:
		fmt.Fprintf(w, "next: pwsync campaign start %s\n", c.ID)
	}
}

// followStatus prints the status once, or until the campaign ends: a
// redrawn progress bar on a terminal, plain lines otherwise.
func followStatus(ctx context.Context, client *adminapi.Client, path string, follow bool, every time.Duration, w io.Writer) error {
	tty := isTerminal(w)
	last := ""
	for {
		var st campaign.Status
		if err := client.Do(ctx, http.MethodGet, path, nil, &st); err != nil {
			return err
		}
		line := progressLine(st, 30)
		switch {
		case tty && follow:
			fmt.Fprintf(w, "\r\033[K%s", line)
		case line != last:
			fmt.Fprintln(w, line)
		}
		last = line
		if !follow || st.Campaign.State.Terminal() {
			if tty && follow {
				fmt.Fprintln(w)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressLine is "[#####.....]  45.0% done 2250 failed 3 remaining 2747 | 37.5 users/s | ETA 1m13s | running".
func progressLine(st campaign.Status, width int) string {
	s := st.Stats
	total := max(s.Total, 1)
	finished := s.Done + s.Failed
	filled := finished * width / total
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	eta := "-"
	if s.Rate > 0 && s.Remaining > 0 {
		eta = (time.Duration(float64(s.Remaining)/s.Rate) * time.Second).Round(time.Second).String()
	}
	line := fmt.Sprintf("[%s] %5.1f%% done %d failed %d remaining %d | %.1f users/s | ETA %s | %s",
		bar, 100*float64(finished)/float64(total), s.Done, s.Failed, s.Remaining, s.Rate, eta, st.Campaign.State)
	if s.Confirmed+s.ConfirmFailed > 0 {
		line += fmt.Sprintf(" | marked compromised %d, failed %d", s.Confirmed, s.ConfirmFailed)
	}
	if !s.ADUnreachable.IsZero() {
		line += " | DC unreachable since " + s.ADUnreachable.Local().Format(time.TimeOnly) + ", AD writes waiting"
	}
	return line
}
