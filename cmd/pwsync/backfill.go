package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/pwsync/pwsync/services/evaluator"
)

const backfillUsage = `Usage: pwsync backfill <command> [flags]

  status [ID]   the backfill batches (a first full sync's backfill, a re-evaluation
                after a policy change): held ones wait for an approver
  approve ID    approver role: write what the held batch decided
  reject ID     approver role: drop it; nothing is written

Admin API: --admin-url/--token/--ca-file or PWSYNC_ADMIN_URL, PWSYNC_ADMIN_TOKEN (token may be file:PATH), PWSYNC_ADMIN_CA.
`

func backfillCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, backfillUsage)
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("backfill "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminClient := adminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	client, err := adminClient()
	if err != nil {
		return err
	}
	const base = "/api/v1/backfill"
	switch cmd {
	case "status":
		if fs.NArg() == 1 {
			var b evaluator.Batch
			if err := client.Do(ctx, http.MethodGet, base+"/"+url.PathEscape(fs.Arg(0)), nil, &b); err != nil {
				return err
			}
			printBatch(stdout, b)
			return nil
		}
		var bs []evaluator.Batch
		if err := client.Do(ctx, http.MethodGet, base, nil, &bs); err != nil {
			return err
		}
		if len(bs) == 0 {
			fmt.Fprintln(stdout, "no backfill batches")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tDOMAIN\tSTATUS\tUSERS\tTHRESHOLD\tRELEASED\tDECIDED BY")
		for _, b := range bs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", b.ID, b.Kind, b.Domain, b.Status, b.Users, b.Threshold, b.Released, b.DecidedBy)
		}
		return tw.Flush()
	case "approve", "reject":
		if fs.NArg() != 1 {
			return fmt.Errorf("backfill %s: one batch ID (pwsync backfill status lists them)", cmd)
		}
		var b evaluator.Batch
		if err := client.Do(ctx, http.MethodPost, base+"/"+url.PathEscape(fs.Arg(0))+"/"+cmd, struct{}{}, &b); err != nil {
			return err
		}
		printBatch(stdout, b)
		return nil
	}
	return fmt.Errorf("backfill: unknown command %q\n%s", cmd, backfillUsage)
}

func printBatch(w io.Writer, b evaluator.Batch) {
	fmt.Fprintf(w, "batch      %s (%s)\n", b.ID, b.Kind)
	if b.Domain != "" {
		fmt.Fprintf(w, "domain     %s\n", b.Domain)
	}
	fmt.Fprintf(w, "status     %s\n", b.Status)
	fmt.Fprintf(w, "users      %d (threshold %d), %d actions\n", b.Users, b.Threshold, b.Actions)
	if len(b.Sample) > 0 {
		fmt.Fprintf(w, "sample     %s\n", strings.Join(b.Sample, ", "))
	}
	if b.DecidedBy != "" {
		fmt.Fprintf(w, "decided by %s at %s\n", b.DecidedBy, b.Decided.Format("2006-01-02 15:04:05Z07:00"))
	}
	fmt.Fprintf(w, "released   %d", b.Released)
	if b.Superseded > 0 {
		fmt.Fprintf(w, " (%d dropped: the user changed since)", b.Superseded)
	}
	fmt.Fprintln(w)
	if b.DryRun {
		fmt.Fprintln(w, "dry run    nothing is written either way")
	}
	if b.Detail != "" {
		fmt.Fprintf(w, "detail     %s\n", b.Detail)
	}
}
