package main

// Scale-out (issue 6, item 5): a 3-node NATS JetStream cluster on loopback
// with R3 streams and KV, two pwsync processes per target, a real 2,000-user
// campaign (issue 5) run through the admin API (create, preview, approval by
// a second principal, start) while live AD resets on real Samba AD flow
// through ingest, the evaluator and the actuator. Mid-run one NATS node and
// one replica of each target are killed (SIGKILL): the ingest replica
// watching AD, the evaluator running the expiry scheduler and the actuator
// running the campaign. Asserted: every campaign user got its must-change and
// its session revoke exactly once and every AD reset reached Graph exactly
// once (the simulator's request log), the campaign reaches done with a
// complete report, and every lease the killed replicas held (adwatch, campaign
// runner, scheduler, Graph subscription/delta) is taken by a survivor within
// leaseTakeoverBound.
//
// Sizes: PWSYNC_SCALEOUT_USERS (campaign users, cloud-managed, default 2000),
// PWSYNC_SCALEOUT_AD_USERS (live AD resets, default 100). The simulator's
// write budget is Graph's 3,000 writes time-scaled to a 10 s window, and the
// campaign paces itself under it.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/services/ingest"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// leaseTakeoverBound: lease TTL (15 s) + acquire poll (2.5 s) + a NATS
// node's loss (stream leader elections) with margin.
const leaseTakeoverBound = 25 * time.Second

// scaleOutOU keeps its users between runs: users created and deleted by
// every run would leave tombstones each time on the shared DC.
const scaleOutOU = "OU=pwsync-scaleout"

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// replica is one pwsync process.
type replica struct {
	target   string
	instance string // its name in the leases (config instance:)
	ops      string
	admin    string // its admin API address
	cmd      *exec.Cmd
	done     chan error
	killed   bool
}

func (r *replica) pid() int { return r.cmd.Process.Pid }

// holds reports whether a lease holder name is this replica's.
func (r *replica) holds(holder string) bool { return holder == r.instance }

func TestScaleOutSurvivesNodeAndReplicaLoss(t *testing.T) {
	if os.Getenv("PWSYNC_SCALEOUT") != "1" {
		t.Skip("set PWSYNC_SCALEOUT=1 (make test does) to run the scale-out test")
	}
	nCampaign, nAD := envInt("PWSYNC_SCALEOUT_USERS", 2000), envInt("PWSYNC_SCALEOUT_AD_USERS", 100)
	cluster := natstest.RunClusterProcesses(t, 3)
	s := newStack(t, stackOpts{Webhook: true, NATSURL: cluster.URL(), GraphTimeout: 5 * time.Second,
		SimWriteBudget: graphsim.DefaultWriteBudget, SimWriteWindow: 10 * time.Second})
	// Kinder than Graph on purpose: this test counts each must-change write
	// exactly once across kills. Graph's flag-only PATCH changes nothing, so
	// after a kill no read can tell a lost answer from a PATCH never sent and
	// the (harmless) no-op may be sent again; the fault tests count that case.
	s.sim.SetForceChangeNoop(false)
	adm := s.withAdmin(t)
	approverTok := adm.Approver // a second principal: approver role only
	adUsers := scaleOutPopulation(t, s.dc, nAD)
	for _, u := range adUsers {
		s.cloudUser(u, false)
	}
	// The campaign's users: cloud-managed accounts, selected by a UPN list.
	campUsers := make([]adtest.User, nCampaign)
	upns := make([]string, nCampaign)
	for i := range campUsers {
		sam := fmt.Sprintf("camp%05d", i)
		campUsers[i] = adtest.User{SAM: sam, UPN: sam + "@example.test"}
		s.cloudUser(campUsers[i], false)
		upns[i] = campUsers[i].UPN
	}

	// One config per replica: R3, expiry scheduler on (a singleton), no
	// actuator pacing (the simulator's budget applies, the campaign paces
	// itself under it), its own addresses and instance name.
	s.writeConfig(t)
	base, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(base)
	for _, r := range [][2]string{
		{"  url: " + cluster.URL(), "  url: " + cluster.URL() + "\n  replicas: 3"},
		{"log: {level: info}", "log: {level: warn}"},
		{"  scope:\n", "  scope:\n    include_disabled: true\n"},
		{"evaluator:\n", "evaluator:\n  expiry: {enabled: true}\n"},
		{"never_expires: {enabled: true}", "never_expires: {enabled: false}"},
		{"actuator:\n", "actuator:\n  write_budget: 0\n"},
		{`include_ous: ["` + s.ou + `"]`, `include_ous: ["` + scaleOutOU + "," + s.dc.BaseDN + `"]`},
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("config template changed: no %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	cfg += "campaigns: {approval_threshold: 100, write_budget: 3000, write_window: 10s, write_share: 0.9, uncertain_wait: 5s}\n"
	// The topology first, once: six replicas creating R3 streams at the same
	// moment is not what this test is about.
	conn := cluster.Connect(t)
	natstest.EnsureTopology(t, conn.JS, 3)
	var replicas []*replica
	for _, target := range []string{"ingest", "evaluator", "actuator"} {
		for i := range 2 {
			r := &replica{target: target, instance: fmt.Sprintf("%s-%d", target, i), ops: freeAddr(t)}
			// Same host: each replica needs its own instance name and listeners;
			// the admin API (campaign routes) only on the actuators, fewer
			// ports picked ahead of use.
			c := strings.Replace(cfg, s.opsAddr, r.ops, 1) + "instance: " + r.instance + "\n"
			if target == "actuator" {
				r.admin = freeAddr(t)
				c = strings.Replace(c, adm.Addr, r.admin, 1)
			} else {
				c = strings.Replace(c, "admin:\n  enabled: true", "admin:\n  enabled: false", 1)
			}
			if target == "ingest" && i == 1 {
				c = strings.ReplaceAll(c, s.hookAddr, freeAddr(t))
			}
			path := filepath.Join(s.dir, fmt.Sprintf("%s-%d.yaml", target, i))
			if err := os.WriteFile(path, []byte(c), 0o600); err != nil {
				t.Fatal(err)
			}
			startReplica(t, s.dir, r, path, i)
			replicas = append(replicas, r)
		}
	}
	for _, r := range replicas {
		waitReplicaReady(t, r)
	}
	leases, err := natsx.Bucket(context.Background(), conn.JS, natsx.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	adLease := ingest.LeasePrefix + "example.test"
	singletons := []string{"graph-subscription", "graph-delta", "scheduler.expiry", campaign.LeaseKey, adLease}
	waitFor(t, 30*time.Second, "the singleton leases held", func() bool {
		h := leaseHolders(t, leases)
		for _, name := range singletons {
			if h[name] == "" {
				return false
			}
		}
		return true
	})

	// Count the writes that took effect, to kill mid-run.
	var written atomic.Int64
	s.sim.OnRequest(func(r graphsim.Request) {
		if r.Status/100 == 2 && (r.Method == http.MethodPatch && describe(r) == "force=true" || describe(r) == "revoke") {
			written.Add(1)
		}
	})
	wantWrites := int64(2*nCampaign + nAD)

	// The campaign, through the admin API of an actuator replica: created and
	// previewed by the operator, approved by a second person, started.
	ctx := context.Background()
	api := func(tok string) *adminapi.Client {
		for _, r := range replicas {
			if r.target == "actuator" && !r.killed {
				c, err := adminapi.NewClient("https://"+r.admin, tok, adm.CA)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
		}
		t.Fatal("no actuator replica left")
		return nil
	}
	start := time.Now()
	var c campaign.Campaign
	spec := campaign.Spec{Name: "scale-out breach response", Reason: "INC-SCALEOUT",
		Include: campaign.Selector{UPNs: upns}, Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}}
	if err := api(adm.Operator).Do(ctx, http.MethodPost, "/api/v1/campaigns", spec, &c); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := api(adm.Operator).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/preview", nil, &c); err != nil {
		t.Fatalf("preview: %v", err)
	}
	if c.Targets != nCampaign || !c.NeedsApproval {
		t.Fatalf("preview: %d targets (want %d), needs approval %v", c.Targets, nCampaign, c.NeedsApproval)
	}
	var apiErr *adminapi.APIError
	if err := api(adm.Operator).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/approve", nil, nil); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("the creator approving their own campaign: %v, want 403", err)
	}
	if err := api(approverTok).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/approve", nil, &c); err != nil {
		t.Fatalf("approve: %v", err)
	}
	if err := api(adm.Operator).Do(ctx, http.MethodPost, "/api/v1/campaigns/"+c.ID+"/start", nil, &c); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("campaign %s of %d users created, previewed, approved by %s and started in %.1fs", c.ID, c.Targets, c.ApprovedBy, time.Since(start).Seconds())
	burstDone := make(chan struct{})
	go func() {
		defer close(burstDone)
		t0 := time.Now()
		modifyAll(t, s.dc, adUsers, "0")
		t.Logf("%d live AD resets issued in %.1fs", nAD, time.Since(t0).Seconds())
	}()

	waitFor(t, 60*time.Second, "a quarter of the writes done", func() bool { return written.Load() >= wantWrites/4 })
	before := leaseHolders(t, leases)
	killAt := time.Now()
	cluster.Kill(t, 0) // SIGKILL: no shutdown, no leadership handover
	killed := map[string]*replica{}
	for target, lease := range map[string]string{"ingest": adLease, "evaluator": "scheduler.expiry", "actuator": campaign.LeaseKey} {
		victim := pickVictim(replicas, target, before[lease])
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		victim.killed = true
		killed[target] = victim
	}
	t.Logf("killed nats node n1 and ingest=%s evaluator=%s actuator=%s after %d of %d writes (%.1fs in)",
		killed["ingest"].instance, killed["evaluator"].instance, killed["actuator"].instance, written.Load(), wantWrites, killAt.Sub(start).Seconds())

	// Every lease a killed replica held moves to a survivor within the bound;
	// all are watched at once, so each move is timed on its own.
	pending := map[string]*replica{}
	for _, name := range singletons {
		for _, r := range killed {
			if r.holds(before[name]) {
				pending[name] = r
			}
		}
	}
	moves := map[string]time.Duration{}
	for len(pending) > 0 {
		h := leaseHolders(t, leases)
		for name, victim := range pending {
			if h[name] != "" && !victim.holds(h[name]) {
				moves[name] = time.Since(killAt)
				t.Logf("lease %s: %s -> %s in %.1fs", name, before[name], h[name], moves[name].Seconds())
				delete(pending, name)
			}
		}
		if since := time.Since(killAt); since > leaseTakeoverBound && len(pending) > 0 {
			t.Fatalf("leases %v still held by the killed replicas %s after the kill (bound %s)", pending, since.Round(time.Second), leaseTakeoverBound)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{adLease, campaign.LeaseKey, "scheduler.expiry"} {
		if _, ok := moves[name]; !ok {
			t.Fatalf("lease %s did not move: its holder %q was not killed", name, before[name])
		}
	}

	<-burstDone
	var st campaign.Status
	waitFor(t, 90*time.Second, "the campaign done", func() bool {
		err := api(adm.Operator).Do(ctx, http.MethodGet, "/api/v1/campaigns/"+c.ID, nil, &st)
		return err == nil && st.Campaign.State.Terminal()
	})
	waitFor(t, 60*time.Second, "every write done", func() bool { return written.Load() >= wantWrites })
	allDone := time.Since(start)
	time.Sleep(3 * time.Second) // redeliveries of in-flight work would land now
	if st.Campaign.State != campaign.StateDone {
		t.Fatalf("campaign ended %s: %s", st.Campaign.State, st.Campaign.Error)
	}

	// The report is complete: every user, every step done.
	var rep campaign.Report
	if err := api(adm.Operator).Do(ctx, http.MethodGet, "/api/v1/campaigns/"+c.ID+"/report", nil, &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	if len(rep.Users) != nCampaign || rep.Stats.Done != nCampaign || rep.Stats.Failed != 0 || rep.Stats.Remaining != 0 {
		t.Fatalf("report: %d rows, stats %+v; want %d done", len(rep.Users), rep.Stats, nCampaign)
	}
	for _, row := range rep.Users {
		for _, step := range []campaign.Step{campaign.StepCloudMustChange, campaign.StepRevoke} {
			if r := row.Steps[step]; row.Outcome != campaign.StatusDone || r == nil || r.Status != campaign.StatusDone {
				t.Fatalf("report row %s: outcome %s, %s %+v", row.UPN, row.Outcome, step, r)
			}
		}
	}

	// Nothing lost, nothing doubled: per user exactly the writes it is due,
	// and no other write.
	type count struct{ force, revoke int }
	perUser := map[string]*count{}
	others := 0
	for _, r := range s.sim.Requests() {
		if r.Method == http.MethodGet || r.Status/100 != 2 || (r.ItemID == "" && r.BatchID != "") || !strings.Contains(r.Path, "/users/") {
			continue
		}
		id := strings.Split(strings.TrimPrefix(r.Path, "/v1.0/users/"), "/")[0]
		if perUser[id] == nil {
			perUser[id] = &count{}
		}
		switch d := describe(r); {
		case r.Method == http.MethodPatch && d == "force=true":
			perUser[id].force++
		case d == "revoke":
			perUser[id].revoke++
		default:
			others++
		}
	}
	var lost, doubled []string
	check := func(users []adtest.User, want count) {
		for _, u := range users {
			got := perUser["cloud-"+u.SAM]
			if got == nil {
				got = &count{}
			}
			switch {
			case got.force < want.force || got.revoke < want.revoke:
				lost = append(lost, fmt.Sprintf("%s %+v", u.SAM, *got))
			case *got != want:
				doubled = append(doubled, fmt.Sprintf("%s %+v", u.SAM, *got))
			}
		}
	}
	check(campUsers, count{force: 1, revoke: 1})
	check(adUsers, count{force: 1})
	if len(lost) > 0 || len(doubled) > 0 || others > 0 {
		t.Fatalf("%d lost (%v), %d doubled (%v), %d other writes", len(lost), head(lost), len(doubled), head(doubled), others)
	}
	t.Logf("campaign of %d users (%d writes: must-change + revoke; %d read back after the kill) + %d AD resets -> %d Graph writes, 0 lost, 0 doubled, campaign done with %d report rows, in %.1fs (%.0f writes/s) across a NATS node and 3 replica kills; sim throttled %d",
		nCampaign, 2*nCampaign, rep.Stats.Verified, nAD, wantWrites, len(rep.Users), allDone.Seconds(), float64(wantWrites)/allDone.Seconds(), s.sim.Stats().Throttled)
}

func head(s []string) []string { return s[:min(len(s), 5)] }

// pickVictim returns the target's replica holding the named lease (its
// singleton work must move), or the first one.
func pickVictim(replicas []*replica, target, holder string) *replica {
	var first *replica
	for _, r := range replicas {
		if r.target != target {
			continue
		}
		if r.holds(holder) {
			return r
		}
		if first == nil {
			first = r
		}
	}
	return first
}

func leaseHolders(t *testing.T, kv jetstream.KeyValue) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out := map[string]string{}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return out // the cluster is electing; the caller polls again
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			break
		}
		out[e.Key()] = string(e.Value())
	}
	return out
}

func startReplica(t *testing.T, dir string, r *replica, cfgPath string, i int) {
	t.Helper()
	logFile, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", r.target, i)))
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(os.Args[0], "run", "--config", cfgPath, "--target", r.target)
	r.cmd.Env = append(os.Environ(), "PWSYNC_E2E_CHILD=1")
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.done = make(chan error, 1)
	exited := make(chan struct{})
	go func() { r.done <- r.cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = r.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			data, _ := os.ReadFile(logFile.Name())
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("%s-%d log (last lines):\n%s", r.target, i, strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	})
}

func waitReplicaReady(t *testing.T, r *replica) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-r.done:
			t.Fatalf("%s replica exited before ready: %v", r.target, err)
		default:
		}
		if resp, err := http.Get("http://" + r.ops + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s replica not ready after 60s", r.target)
}

// scaleOutPopulation returns n disabled users (no password) in the
// persistent OU, created on first use, each with pwdLastSet set to now (not
// flagged), so that the burst's pwdLastSet=0 is a change for every one.
func scaleOutPopulation(t *testing.T, dc *adtest.DC, n int) []adtest.User {
	t.Helper()
	ou := scaleOutOU + "," + dc.BaseDN
	c := dc.Conn(t)
	if err := c.Add(func() *ldap.AddRequest {
		r := ldap.NewAddRequest(ou, nil)
		r.Attribute("objectClass", []string{"organizationalUnit"})
		return r
	}()); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
		t.Fatalf("creating %s: %v", ou, err)
	}
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(ou, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=user)", []string{"sAMAccountName"}, nil), 1000)
	if err != nil {
		t.Fatalf("listing %s: %v", ou, err)
	}
	have := map[string]bool{}
	for _, e := range res.Entries {
		have[e.GetAttributeValue("sAMAccountName")] = true
	}
	users := make([]adtest.User, n)
	var missing []adtest.User
	for i := range users {
		sam := fmt.Sprintf("pwso%05d", i)
		users[i] = adtest.User{DN: "CN=" + sam + "," + ou, SAM: sam, UPN: sam + "@" + strings.ToLower(dc.Realm)}
		if !have[sam] {
			missing = append(missing, users[i])
		}
	}
	t0 := time.Now()
	parallel(t, dc, missing, func(c *ldap.Conn, u adtest.User) error {
		r := ldap.NewAddRequest(u.DN, nil)
		r.Attribute("objectClass", []string{"user"})
		r.Attribute("sAMAccountName", []string{u.SAM})
		r.Attribute("userPrincipalName", []string{u.UPN})
		r.Attribute("userAccountControl", []string{"514"})
		return c.Add(r)
	})
	if len(missing) > 0 {
		t.Logf("created %d users in %s in %s", len(missing), ou, time.Since(t0).Round(time.Second))
	}
	t0 = time.Now()
	modifyAll(t, dc, users, "-1")
	t.Logf("unflagged %d users in %s", n, time.Since(t0).Round(time.Second))
	return users
}

// modifyAll sets pwdLastSet on every user: "0" flags (the helpdesk's "must
// change"), "-1" sets it to now.
func modifyAll(t *testing.T, dc *adtest.DC, users []adtest.User, pwdLastSet string) {
	parallel(t, dc, users, func(c *ldap.Conn, u adtest.User) error {
		m := ldap.NewModifyRequest(u.DN, nil)
		m.Replace("pwdLastSet", []string{pwdLastSet})
		return c.Modify(m)
	})
}

// parallel runs op over users on two LDAP connections (Samba serves LDAP in
// one worker; a second connection overlaps the round trips, more do not help).
func parallel(t *testing.T, dc *adtest.DC, users []adtest.User, op func(*ldap.Conn, adtest.User) error) {
	const workers = 2
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := range workers {
		c := dc.Conn(t)
		wg.Go(func() {
			for i := w; i < len(users); i += workers {
				if err := op(c, users[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", users[i].DN, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Errorf("LDAP: %v", firstErr)
	}
}
