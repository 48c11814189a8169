package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
)

// auditCommand: `pwsync audit export --since 24h|RFC3339 --user UPN --format jsonl|csv`,
// read from the running pwsync's NATS like `pwsync user`.
func auditCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		return errors.New("usage: pwsync audit export --config FILE [--since 24h|7d|RFC3339] [--user UPN|GUID] [--format jsonl|csv]")
	}
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	since := fs.String("since", "24h", "from: a duration back (24h, 7d) or an RFC 3339 time; \"\" = everything kept")
	user := fs.String("user", "", "only this user (UPN or AD objectGUID)")
	format := fs.String("format", "jsonl", "jsonl | csv")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	from, err := audit.ParseSince(*since, clock())
	if err != nil {
		return fmt.Errorf("--%w", err)
	}
	cfg, _, err := config.Load(*cfgPath, config.Targets{}, os.Getenv)
	if err != nil {
		return err
	}
	js, closeNATS, err := cliNATS(cfg)
	if err != nil {
		return err
	}
	defer closeNATS()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	return exportAudit(ctx, js, audit.Query{Since: from, User: *user}, *format, stdout)
}

func exportAudit(ctx context.Context, js jetstream.JetStream, q audit.Query, format string, out io.Writer) error {
	ex, err := audit.NewExporter(out, format)
	if err != nil {
		return fmt.Errorf("--%w", err)
	}
	if err := audit.Read(ctx, js, q, ex.Write); err != nil {
		return err
	}
	return ex.Flush()
}
