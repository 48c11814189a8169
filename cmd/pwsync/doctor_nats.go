// pwsync doctor's NATS checks: the embedded data dir, connection, JetStream, the streams.

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/natsx"
)

// --- NATS ---

func (d *doctor) checkNATS(ctx context.Context) {
	n := d.cfg.NATS
	if n.URL == "" {
		dir := n.Embedded.DataDir
		probe := filepath.Join(dir, ".pwsync-doctor")
		err := os.MkdirAll(dir, 0o700)
		if err == nil {
			err = os.WriteFile(probe, nil, 0o600)
			os.Remove(probe)
		}
		if err != nil {
			d.add(checkResult{statusFail, "nats embedded", err.Error(), "nats.embedded.data_dir must be a directory pwsync's user can write (systemd: StateDirectory=pwsync)"})
			return
		}
		d.add(checkResult{Status: statusPass, Name: "nats embedded", Detail: "JetStream store " + dir + " is writable"})
		if n.Replicas > 1 {
			d.add(checkResult{statusFail, "nats replicas", fmt.Sprintf("nats.replicas is %d but the embedded server is a single node", n.Replicas),
				"set nats.replicas: 1, or nats.url to a JetStream cluster"})
		}
		return
	}
	opts := []nats.Option{nats.Name("pwsync-doctor"), nats.Timeout(d.timeout), nats.MaxReconnects(0)}
	if n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if n.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKeyFile)
		if err != nil {
			d.add(checkResult{statusFail, "nats connect", err.Error(), "nats.nkey_file must hold an nkey seed (SU...)"})
			return
		}
		opts = append(opts, o)
	}
	if n.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.CAFile))
	}
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		d.add(checkResult{statusFail, "nats connect", err.Error(),
			"check nats.url (nats://host:4222, comma-separated for a cluster), that nats-server runs and is reachable, and nats.creds_file / nats.nkey_file / nats.ca_file"})
		return
	}
	defer nc.Close()
	d.add(checkResult{Status: statusPass, Name: "nats connect", Detail: fmt.Sprintf("connected to %s (server %s, cluster %q, %d known servers)",
		nc.ConnectedUrlRedacted(), nc.ConnectedServerVersion(), nc.ConnectedClusterName(), len(nc.Servers()))})
	js, err := jetstream.New(nc)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		var info *jetstream.AccountInfo
		if info, err = js.AccountInfo(ctx); err == nil {
			d.add(checkResult{Status: statusPass, Name: "nats jetstream", Detail: fmt.Sprintf("usable: %d streams, %d consumers in the account", info.Streams, info.Consumers)})
			d.checkStreams(ctx, js, n.Replicas)
			return
		}
	}
	d.add(checkResult{statusFail, "nats jetstream", err.Error(),
		"enable JetStream on the servers (jetstream { store_dir: ... } in nats-server.conf; Helm: config.jetstream.enabled=true) and for pwsync's account"})
}

func (d *doctor) checkStreams(ctx context.Context, js jetstream.JetStream, replicas int) {
	var missing, differ []string
	for _, name := range []string{natsx.StreamEvents, natsx.StreamActions, natsx.StreamAudit, natsx.StreamDLQ} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		if r := s.CachedInfo().Config.Replicas; r != replicas {
			differ = append(differ, fmt.Sprintf("%s R%d", name, r))
		}
	}
	switch {
	case len(missing) > 0:
		d.add(checkResult{statusWarn, "nats streams", "missing: " + strings.Join(missing, ", "),
			"`pwsync run` creates them on start (the account needs permission to create streams)"})
	case len(differ) > 0:
		d.add(checkResult{statusWarn, "nats streams", fmt.Sprintf("replicas differ from nats.replicas=%d: %s", replicas, strings.Join(differ, ", ")),
			"`pwsync run` updates them on start; the cluster needs at least nats.replicas JetStream servers"})
	default:
		d.add(checkResult{Status: statusPass, Name: "nats streams", Detail: fmt.Sprintf("EVENTS, ACTIONS, AUDIT, DLQ present with R%d", replicas)})
	}
}
