package main

// Scale-out (issue 6, item 5): a 3-node NATS JetStream cluster on loopback
// with R3 streams and KV, two pwsync processes per target, a burst of AD
// resets on real Samba AD; mid-run one NATS node and one replica of each
// target are killed (SIGKILL). Asserted: every reset reaches Graph, no Graph
// write takes effect twice (simulator log), and every lease the killed
// replicas held (graph-subscription, graph-delta, scheduler.expiry) is taken
// by a surviving replica within leaseTakeoverBound.
//
// The campaign engine (issue 8) was not on main when this was written: the
// 2,000-user campaign is 2,000 require_password_change actions published on
// ACTIONS as a campaign runner would (rule "campaign"), alongside live AD
// resets through ingest and the evaluator. Sizes: PWSYNC_SCALEOUT_USERS
// (campaign, default 2000), PWSYNC_SCALEOUT_AD_USERS (live resets, default
// 100: Samba serves 2-6 resets/s here with two ingest replicas watching it).

import (
	"context"
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

	"github.com/pwsync/pwsync/shared/adtest"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graphsim"
	"github.com/pwsync/pwsync/shared/natstest"
	"github.com/pwsync/pwsync/shared/natsx"
)

// leaseTakeoverBound: lease TTL (15 s) + acquire poll (2.5 s) + a NATS
// node's loss (stream leader elections) with margin.
const leaseTakeoverBound = 25 * time.Second

// scaleOutOU keeps its users between runs: 2,000 users created and deleted
// by every run would leave 2,000 tombstones each time on the shared DC.
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
	cmd      *exec.Cmd
	done     chan error
}

func (r *replica) pid() int { return r.cmd.Process.Pid }

// holds reports whether a lease holder name is this replica's.
func (r *replica) holds(holder string) bool { return holder == r.instance }

func TestScaleOutSurvivesNodeAndReplicaLoss(t *testing.T) {
	if os.Getenv("PWSYNC_SCALEOUT") != "1" {
		t.Skip("set PWSYNC_SCALEOUT=1 (make test does) to run the scale-out test")
	}
	nCampaign, nAD := envInt("PWSYNC_SCALEOUT_USERS", 2000), envInt("PWSYNC_SCALEOUT_AD_USERS", 100)
	n := nCampaign + nAD
	cluster := natstest.RunCluster(t, 3)
	s := newStack(t, stackOpts{Webhook: true, NATSURL: cluster.URL()})
	users := scaleOutPopulation(t, s.dc, nAD)
	for _, u := range users {
		s.cloudUser(u, false)
	}
	campaign := make([]events.Action, nCampaign)
	for i := range campaign {
		sam := fmt.Sprintf("camp%05d", i)
		u := adtest.User{SAM: sam, UPN: sam + "@example.test"}
		ref := events.UserRef{Domain: "example.test", ObjectGUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), UPN: u.UPN, CloudID: s.cloudUser(u, false)}
		campaign[i] = events.Action{ID: events.ActionID("campaign", ref, "scaleout"), Kind: events.ActionRequireChange,
			Rule: "campaign", Campaign: "scaleout", EventID: "scaleout", User: ref, Seq: 1}
		users = append(users, u)
	}

	// One config per replica: R3, expiry scheduler on (a singleton), no write
	// pacing (the simulator's own budget still applies), its own addresses.
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
	// The topology first, once: six replicas creating R3 streams at the same
	// moment is not what this test is about.
	conn := cluster.Connect(t)
	natstest.EnsureTopology(t, conn.JS, 3)
	var replicas []*replica
	for _, target := range []string{"ingest", "evaluator", "actuator"} {
		for i := range 2 {
			r := &replica{target: target, instance: fmt.Sprintf("%s-%d", target, i), ops: freeAddr(t)}
			// Same host: each replica needs its own instance name.
			c := strings.Replace(cfg, s.opsAddr, r.ops, 1) + "\ninstance: " + r.instance + "\n"
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
	waitFor(t, 30*time.Second, "the three singleton leases held", func() bool {
		h := leaseHolders(t, leases)
		return h["graph-subscription"] != "" && h["graph-delta"] != "" && h["scheduler.expiry"] != "" &&
			h["adwatch.example.test"] != ""
	})

	// Count the force-change PATCHes that took effect, to kill mid-run.
	var patched atomic.Int64
	s.sim.OnRequest(func(r graphsim.Request) {
		if r.Method == http.MethodPatch && r.Status/100 == 2 && describe(r) == "force=true" {
			patched.Add(1)
		}
	})

	start := time.Now()
	burstDone := make(chan struct{})
	go func() {
		defer close(burstDone)
		modifyAll(t, s.dc, users[:nAD], "0")
		t.Logf("%d live AD resets issued in %.1fs", nAD, time.Since(start).Seconds())
	}()
	pub := natsx.NewPublisher(conn.JS)
	for _, a := range campaign {
		a.EventTime = time.Now()
		if _, err := pub.PublishJSON(context.Background(), a.Subject(), a.ID, a); err != nil {
			t.Fatalf("publishing the campaign: %v", err)
		}
	}
	t.Logf("campaign of %d actions published in %.1fs", nCampaign, time.Since(start).Seconds())

	waitFor(t, 60*time.Second, "a quarter of the resets written", func() bool { return patched.Load() >= int64(n/4) })
	before := leaseHolders(t, leases)
	killAt := time.Now()
	cluster.Stop(0)
	killed := map[string]*replica{}
	for _, target := range []string{"ingest", "evaluator", "actuator"} {
		victim := pickVictim(replicas, target, before)
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed[target] = victim
	}
	t.Logf("killed nats node n1 and pids ingest=%d evaluator=%d actuator=%d after %d of %d resets written (%.1fs in)",
		killed["ingest"].pid(), killed["evaluator"].pid(), killed["actuator"].pid(), patched.Load(), n, killAt.Sub(start).Seconds())

	// Every lease a killed replica held moves to a survivor within the bound.
	for name, holder := range before {
		var victim *replica
		for _, r := range killed {
			if r.holds(holder) {
				victim = r
			}
		}
		if victim == nil {
			continue
		}
		deadline := killAt.Add(leaseTakeoverBound)
		for {
			h := leaseHolders(t, leases)[name]
			if h != "" && !victim.holds(h) {
				t.Logf("lease %s: %s -> %s in %.1fs", name, holder, h, time.Since(killAt).Seconds())
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease %s still %q %s after the kill (bound %s)", name, h, time.Since(killAt).Round(time.Second), leaseTakeoverBound)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	<-burstDone
	waitFor(t, 90*time.Second, "every reset written to Graph", func() bool { return patched.Load() >= int64(n) })
	allDone := time.Since(start)
	time.Sleep(3 * time.Second) // redeliveries of in-flight work would land now

	// Nothing lost, nothing doubled: exactly one effective write per user,
	// and no other write.
	perUser := map[string]int{}
	others := 0
	for _, r := range s.sim.Requests() {
		if r.Method == http.MethodGet || r.Status/100 != 2 || (r.ItemID == "" && r.BatchID != "") || !strings.Contains(r.Path, "/users/") {
			continue
		}
		if r.Method == http.MethodPatch && describe(r) == "force=true" {
			perUser[r.Path]++
		} else {
			others++
		}
	}
	var lost, doubled []string
	for _, u := range users {
		switch c := perUser["/v1.0/users/cloud-"+u.SAM]; {
		case c == 0:
			lost = append(lost, u.SAM)
		case c > 1:
			doubled = append(doubled, fmt.Sprintf("%s x%d", u.SAM, c))
		}
	}
	if len(lost) > 0 || len(doubled) > 0 || others > 0 {
		t.Fatalf("%d lost (%v), %d doubled (%v), %d other writes", len(lost), head(lost), len(doubled), head(doubled), others)
	}
	t.Logf("%d campaign actions + %d AD resets -> %d Graph writes, none lost or doubled, in %.1fs (%.0f/s) across a NATS node and 3 replica kills",
		nCampaign, nAD, n, allDone.Seconds(), float64(n)/allDone.Seconds())
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func pickVictim(replicas []*replica, target string, holders map[string]string) *replica {
	var first *replica
	for _, r := range replicas {
		if r.target != target {
			continue
		}
		if first == nil {
			first = r
		}
		for _, h := range holders {
			if r.holds(h) {
				return r // the lease holder: its singleton work must move
			}
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
