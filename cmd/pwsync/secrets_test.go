package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

func distinctive(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b) + "-Aa1!"
}

// TestSecretsNeverLeak runs a full flow with distinctive secrets (Graph
// client secret, LDAP bind password of a dedicated unprivileged bind
// account, written literally in the config file; the webhook clientState
// pwsync generates; admin API tokens, right and wrong): resets written to
// Graph, Graph answering 500 then success, 401 (dead letter), notifications
// with the right and a wrong clientState, admin calls, a dead-letter alert
// to a Workflows webhook that cannot be reached, a config with errors
// and one readable by others. Then it scans every output for the secrets:
// pwsync's log, every stream (AUDIT included), every KV value, the admin
// API's answers, the config loader's errors and warnings. The clientState
// may live in one place only: the subscriptions bucket, which needs it.
func TestSecretsNeverLeak(t *testing.T) {
	graphSecret := distinctive("Graph-Client-S3cret-")
	bindPW := distinctive("Ldap-Bind-S3cret-")
	dc := adtest.Require(t)
	// The Workflows webhook URL carries its signature; the alert for the
	// dead letter below is posted to a port nobody listens on, so the
	// error (which names the URL) must be redacted everywhere.
	wfSig := distinctive("Workflows-Sig-")
	wfURL := "https://" + freeAddr(t) + "/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=" + wfSig
	s := newStack(t, stackOpts{Webhook: true, GraphSecret: graphSecret, LiteralSecrets: true, Notify: true, WorkflowsWebhookURL: wfURL})
	svc := dc.CreateUser(t, s.ou, "svc-bind", adtest.UserOpts{Password: bindPW})
	s.opts.BindDN, s.opts.BindPassword = svc.DN, bindPW
	s.opts.NATSListen = freeAddr(t)
	a := s.withAdmin(t)
	const pw = "Start.Passw0rd-1"
	alice := s.dc.CreateUser(t, s.ou, "sec-alice", adtest.UserOpts{Password: pw})
	bob := s.dc.CreateUser(t, s.ou, "sec-bob", adtest.UserOpts{Password: pw})
	carol := s.dc.CreateUser(t, s.ou, "sec-carol", adtest.UserOpts{Password: pw})
	dave := s.dc.CreateUser(t, s.ou, "sec-dave", adtest.UserOpts{Password: pw})
	aliceID, bobID := s.cloudUser(alice, false), s.cloudUser(bob, true)
	carolID, daveID := s.cloudUser(carol, false), s.cloudUser(dave, false)
	s.startInProcess(t)
	waitFor(t, 30*time.Second, "a subscription to pwsync's webhook", func() bool { return len(s.sim.Subscriptions()) == 1 })
	sub := s.sim.Subscriptions()[0]

	// Graph failures: 500 twice then success for carol; 401 for dave.
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, PathPrefix: "/v1.0/users/" + carolID, Status: http.StatusInternalServerError, Count: 2})
	s.sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, PathPrefix: "/v1.0/users/" + daveID, Status: http.StatusUnauthorized, Count: -1})
	for _, u := range []adtest.User{alice, bob, carol, dave} {
		s.dc.ForceChange(t, u.DN)
	}
	s.waitWritesWithin(t, aliceID, cloudResetWrites, 0, 30*time.Second)
	s.waitWritesWithin(t, bobID, []string{"POST revoke 200", "POST members 204"}, 0, 30*time.Second)
	s.waitWritesWithin(t, carolID, append([]string{"PATCH force=true 500", "PATCH force=true 500"}, cloudResetWrites...), 0, 30*time.Second)
	s.waitWritesWithin(t, daveID, []string{"PATCH force=true 401"}, 0, 30*time.Second)

	// Notifications: genuine, and forged with a wrong clientState.
	wrongState := distinctive("Wrong-Client-State-")
	for _, cs := range []string{sub.ClientState, wrongState} {
		note := fmt.Sprintf(`{"value":[{"changeType":"updated","clientState":%q,"resource":"Users/%s","subscriptionId":%q,`+
			`"subscriptionExpirationDateTime":"2099-01-01T00:00:00Z","tenantId":%q,"resourceData":{"id":%q}}]}`,
			cs, aliceID, sub.ID, s.sim.TenantID(), aliceID)
		resp, err := s.hook.Post("https://"+s.hookAddr+"/graph/notifications", "application/json", strings.NewReader(note))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// Admin API: the right token and two near misses.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nearMiss := a.Operator[:len(a.Operator)-1] + "x"
	var answers strings.Builder
	for _, tok := range []string{a.Operator, nearMiss, "pwsa_" + nearMiss} {
		var out map[string]any
		err := a.client(t, tok).Do(ctx, "GET", "/api/v1/whoami", nil, &out)
		fmt.Fprintf(&answers, "%v %v\n", out, err)
		var apiErr *adminapi.APIError
		if tok != a.Operator && !errors.As(err, &apiErr) {
			t.Errorf("admin call with token %q: %v, want an API error", tok, err)
		}
	}

	// The config loader: an error next to literal secrets, and a file
	// readable by others.
	cfgText, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfgText), graphSecret) || !strings.Contains(string(cfgText), bindPW) {
		t.Fatal("the config does not hold the secrets literally; the test would prove nothing")
	}
	var loaderOut strings.Builder
	for i, mutate := range []func(string) string{
		func(c string) string { return strings.Replace(c, "client_secret:", "client_secrett:", 1) },
		func(c string) string { return strings.Replace(c, "base_url: ", "base_url: http://", 1) },
		func(c string) string { return c }, // valid, but mode 644
	} {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("bad%d.yaml", i))
		if err := os.WriteFile(p, []byte(mutate(string(cfgText))), 0o644); err != nil {
			t.Fatal(err)
		}
		_, warnings, err := config.Load(p, config.AllTargets, os.Getenv)
		fmt.Fprintf(&loaderOut, "%v %q\n", err, warnings)
		if i < 2 && err == nil {
			t.Errorf("broken config %d loaded", i)
		}
		if i == 2 && len(warnings) == 0 {
			t.Errorf("a config with literal secrets readable by others gave no warning")
		}
	}

	// Let the dead letter and the notifications' delta rounds settle.
	conn := natsConn(t, "nats://"+s.opts.NATSListen)
	waitFor(t, 30*time.Second, "dave's dead letter in the audit", func() bool {
		for _, r := range auditRecords(t, conn.JS) {
			if r.CloudID == daveID && r.Outcome == "dead_letter" {
				return true
			}
		}
		return false
	})

	waitFor(t, 60*time.Second, "the dead letter's alert attempted (and failed)", func() bool {
		for _, r := range auditRecords(t, conn.JS) {
			if r.Action == "dead_letter_alert" && r.Outcome == "failed" {
				return true
			}
		}
		return false
	})

	secrets := map[string]string{"graph client secret": graphSecret, "LDAP bind password": bindPW,
		"workflows webhook signature": wfSig,
		"webhook clientState":         sub.ClientState, "wrong clientState": wrongState,
		"admin token": a.Operator, "near-miss admin token": nearMiss, "viewer token": a.Viewer,
		"admin token hash": adminapi.HashToken(a.Operator)}
	outputs := map[string]string{"admin API answers": answers.String(), "config loader": loaderOut.String()}
	logData, err := os.ReadFile(filepath.Join(s.dir, "pwsync.log"))
	if err != nil {
		t.Fatal(err)
	}
	outputs["pwsync log"] = string(logData)
	for _, name := range []string{natsx.StreamEvents, natsx.StreamActions, natsx.StreamAudit, natsx.StreamDLQ} {
		var b strings.Builder
		for _, m := range streamMsgs(t, conn.JS, name) {
			fmt.Fprintf(&b, "%s %v %s\n", m.Subject, m.Header, m.Data)
		}
		outputs["stream "+name] = b.String()
	}
	buckets := conn.JS.KeyValueStoreNames(ctx)
	var clientStateHomes []string
	for name := range buckets.Name() {
		kv, err := conn.JS.KeyValue(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.Keys(ctx)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, k := range keys {
			if e, err := kv.Get(ctx, k); err == nil {
				fmt.Fprintf(&b, "%s=%s\n", k, e.Value())
				if strings.Contains(string(e.Value()), sub.ClientState) {
					clientStateHomes = append(clientStateHomes, name+"/"+k)
				}
			}
		}
		if name == natsx.BucketSubscriptions {
			continue // holds the clientState by design (checked below)
		}
		outputs["KV "+name] = b.String()
	}
	if len(clientStateHomes) != 1 || !strings.HasPrefix(clientStateHomes[0], natsx.BucketSubscriptions+"/") {
		t.Errorf("the clientState is stored in %v, want only the subscriptions bucket", clientStateHomes)
	}
	// The scan looks at real content: each output names something we know.
	for name, want := range map[string]string{"pwsync log": alice.UPN, "stream AUDIT": daveID, "stream EVENTS": alice.GUID,
		"KV users": alice.GUID, "admin API answers": "e2e-operator", "config loader": "client_secrett"} {
		if !strings.Contains(outputs[name], want) {
			t.Errorf("%s does not mention %q: the scan would be vacuous", name, want)
		}
	}
	if !strings.Contains(outputs["stream AUDIT"], "[webhook url]") {
		t.Error("the AUDIT stream lacks the alert's redacted failure: the webhook URL check would be vacuous")
	}
	scanned, leaks := 0, 0
	for oname, out := range outputs {
		scanned += len(out)
		for sname, secret := range secrets {
			if strings.Contains(out, secret) {
				i := strings.Index(out, secret)
				leaks++
				t.Errorf("%s leaked into %s: ...%s...", sname, oname, out[max(0, i-120):i])
			}
		}
	}
	t.Logf("FIGURES %s: %d secrets scanned for in %d outputs (%d bytes): %d leaks", t.Name(), len(secrets), len(outputs), scanned, leaks)
}
