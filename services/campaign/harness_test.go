package campaign_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const simSecret = "campaign-sim-secret"

// Environment of the child process that runs the engine (see TestMain).
const (
	envChild = "PWSYNC_CAMPAIGN_CHILD"
	envNATS  = "PWSYNC_CAMPAIGN_NATS"
	envSim   = "PWSYNC_CAMPAIGN_SIM"  // authority|base|tenant|client|cafile
	envLDAP  = "PWSYNC_CAMPAIGN_LDAP" // url|bind|password|cafile
	envPace  = "PWSYNC_CAMPAIGN_PACE" // budget|window
	envID    = "PWSYNC_CAMPAIGN_ID"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// world is one test's NATS, Graph simulator and (optionally) AD.
type world struct {
	t      *testing.T
	emb    *natsx.Embedded
	conn   *natsx.Conn
	sim    *graphsim.Server
	caFile string
	client *simClient
	store  *campaign.Store
	dc     *adtest.DC
	ldap   *campaign.LDAP
	ou     string
	scope  campaign.Scope
	svc    *campaign.Service
	deps   campaign.Deps             // svc's: svcWith changes them
	runCfg func(*campaign.RunConfig) // adjusts runInProcess's runner
	// graphBase is the simulator's Graph root reached as "localhost", not
	// the 127.0.0.1 of its own URL: a Graph host that is not configuration
	// (graph.microsoft.com in a $ref, say) is refused by the simulator.
	graphBase string

	bgMu    sync.Mutex
	bgReads []time.Time // start times of the break-glass reads that returned
}

func newWorld(t *testing.T, withAD bool, opts graphsim.Options) *world {
	t.Helper()
	w := &world{t: t}
	w.emb, w.conn = natstest.Run(t)
	opts.ClientSecret = simSecret
	sim, err := graphsim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	w.sim = sim
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCAFile(w.caFile); err != nil {
		t.Fatal(err)
	}
	w.graphBase = strings.Replace(sim.GraphBaseURL(), "https://127.0.0.1:", "https://localhost:", 1)
	w.client = newSimClient(sim.AuthorityHost(), w.graphBase, sim.TenantID(), sim.ClientID(), w.caFile)
	if w.store, err = campaign.OpenStore(ctxT(t), w.conn.JS); err != nil {
		t.Fatal(err)
	}
	w.scope = campaign.Scope{Domain: "example.test", BaseDN: "DC=cloud,DC=invalid", UserFilter: "(&(objectCategory=person)(objectClass=user))"}
	if withAD {
		w.dc = adtest.Require(t)
		w.ou = w.dc.NewOU(t)
		w.ldap, err = campaign.NewLDAP(campaign.LDAPConfig{URL: w.dc.LDAPSURL, CAFile: w.dc.CAFile, BindDN: w.dc.BindUPN, BindPassword: w.dc.BindPassword})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.ldap.Close)
		w.scope.BaseDN = w.dc.BaseDN
	}
	w.deps = campaign.Deps{JS: w.conn.JS, Limits: campaign.Limits{ApprovalThreshold: 100, HardCap: 20000},
		// as in production: the actuator's default read-back and fallback
		Verify: mustchange.FromConfig(config.Default().Actuator), Resolver: w.resolver}
	w.svcWith(nil)
	return w
}

// resolver is the service's Resolver: the world's scope as it is now.
func (w *world) resolver(string) (*campaign.Resolver, error) {
	r := &campaign.Resolver{Cloud: w.client, Batch: w.client, Scope: w.scope}
	if w.ldap != nil {
		r.AD = w.ldap
	}
	return r, nil
}

// svcWith rebuilds the world's service with its deps changed by fn (nil:
// as they are).
func (w *world) svcWith(fn func(*campaign.Deps)) {
	w.t.Helper()
	if fn != nil {
		fn(&w.deps)
	}
	svc, err := campaign.New(ctxT(w.t), w.deps)
	if err != nil {
		w.t.Fatal(err)
	}
	w.svc = svc
}

// runner is a campaign service that runs campaigns (under the runner's
// lease, as this test's one holder) with rd.
func (w *world) runner(rd *campaign.RunnerDeps, log zerolog.Logger) *campaign.Service {
	w.t.Helper()
	r, err := campaign.New(ctxT(w.t), campaign.Deps{JS: w.conn.JS, Runner: rd, Holder: "test-runner", Log: log})
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// breakGlass is the Runner's BreakGlass: the world's scope as it is now.
// Each read that succeeds records when it started (readBreakGlassSince).
func (w *world) breakGlass(ctx context.Context, domain string) (*campaign.BreakGlass, error) {
	start := time.Now()
	r, err := w.resolver(domain)
	if err != nil {
		return nil, err
	}
	bg, err := r.BreakGlass(ctx)
	if err == nil {
		w.bgMu.Lock()
		w.bgReads = append(w.bgReads, start)
		w.bgMu.Unlock()
	}
	return bg, err
}

// readBreakGlassSince reports whether a break-glass read that started after
// t has returned.
func (w *world) readBreakGlassSince(t time.Time) bool {
	w.bgMu.Lock()
	defer w.bgMu.Unlock()
	return len(w.bgReads) > 0 && w.bgReads[len(w.bgReads)-1].After(t)
}

func newSimClient(authority, base, tenant, clientID, caFile string) *simClient {
	return &simClient{hc: httpClientWithCA(caFile), authority: authority, base: base, tenant: tenant, clientID: clientID, secret: simSecret}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// adUsers creates n AD users fast (no password: adtest.CreateUsers) and
// stamps pwdLastSet with the current time (-1), so that the campaign's
// pwdLastSet=0 is a visible change.
func (w *world) adUsers(n int) []adtest.User {
	w.t.Helper()
	users := w.dc.CreateUsers(w.t, w.ou, "cmp", n)
	conns := []*ldap.Conn{w.dc.Conn(w.t), w.dc.Conn(w.t)}
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := i; j < len(users); j += len(conns) {
				req := ldap.NewModifyRequest(users[j].DN, nil)
				req.Replace("pwdLastSet", []string{"-1"})
				if err := c.Modify(req); err != nil {
					errs <- fmt.Errorf("stamping pwdLastSet of %s: %w", users[j].DN, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		w.t.Fatal(err)
	}
	return users
}

// pwdLastSets reads pwdLastSet of every user below base, by lower-cased DN.
func (w *world) pwdLastSets(base string) map[string]int64 {
	w.t.Helper()
	res, err := w.dc.Conn(w.t).SearchWithPaging(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=user)", []string{"pwdLastSet"}, nil), 1000)
	if err != nil {
		w.t.Fatalf("reading pwdLastSet below %s: %v", base, err)
	}
	out := make(map[string]int64, len(res.Entries))
	for _, e := range res.Entries {
		v, err := strconv.ParseInt(e.GetAttributeValue("pwdLastSet"), 10, 64)
		if err != nil {
			w.t.Fatalf("%s: pwdLastSet %q", e.DN, e.GetAttributeValue("pwdLastSet"))
		}
		out[strings.ToLower(e.DN)] = v
	}
	return out
}

func (w *world) pwdLastSet(dn string) int64 {
	w.t.Helper()
	v, err := w.ldap.PwdLastSet(ctxT(w.t), dn)
	if err != nil {
		w.t.Fatal(err)
	}
	return v
}

// child runs the engine in a child process (the test binary re-executed).
type child struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func (w *world) startChild(id string, budget int, window time.Duration, n int) *child {
	w.t.Helper()
	logPath := filepath.Join(w.t.TempDir(), fmt.Sprintf("child%d.log", n))
	f, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envNATS+"="+w.emb.ClientURL(), envID+"="+id,
		envSim+"="+strings.Join([]string{w.sim.AuthorityHost(), w.graphBase, w.sim.TenantID(), w.sim.ClientID(), w.caFile}, "|"),
		envPace+"="+strconv.Itoa(budget)+"|"+window.String())
	if w.dc != nil {
		cmd.Env = append(cmd.Env, envLDAP+"="+strings.Join([]string{w.dc.LDAPSURL, w.dc.BindUPN, w.dc.BindPassword, w.dc.CAFile}, "|"))
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { err := cmd.Wait(); f.Close(); c.done <- err }()
	w.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if w.t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			w.t.Logf("child %d log (last lines):\n%s", n, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return c
}

// childMain is the engine as a process: the runner under the campaign
// lease, until the campaign ends.
func childMain() int {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("pid", strconv.Itoa(os.Getpid())).Logger()
	fail := func(err error) int { log.Error().Err(err).Msg("child failed"); return 2 }
	emb := strings.Split(os.Getenv(envSim), "|")
	pace := strings.Split(os.Getenv(envPace), "|")
	budget, _ := strconv.Atoi(pace[0])
	window, _ := time.ParseDuration(pace[1])
	id := os.Getenv(envID)

	conn, err := natsx.Connect(natsx.ConnectConfig{URL: os.Getenv(envNATS), Name: "campaign-child"}, log)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := campaign.OpenStore(ctx, conn.JS)
	if err != nil {
		return fail(err)
	}
	client := newSimClient(emb[0], emb[1], emb[2], emb[3], emb[4])
	rd := &campaign.RunnerDeps{Batch: client, Pacer: campaign.NewPacer(budget, window, 1),
		Cfg: campaign.RunConfig{UncertainWait: 2 * time.Second, RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second,
			PollEvery: 100 * time.Millisecond, VerifyDelay: 100 * time.Millisecond, GraphBaseURL: emb[1]}}
	if l := os.Getenv(envLDAP); l != "" {
		p := strings.Split(l, "|")
		ad, err := campaign.NewLDAP(campaign.LDAPConfig{URL: p[0], BindDN: p[1], BindPassword: p[2], CAFile: p[3]})
		if err != nil {
			return fail(err)
		}
		rd.AD = func(string) (campaign.ADWriter, error) { return ad, nil }
	}
	r, err := campaign.New(ctx, campaign.Deps{JS: conn.JS, Runner: rd, Holder: fmt.Sprintf("child-%d", os.Getpid()), Log: log})
	if err != nil {
		return fail(err)
	}
	go func() { // end when the campaign has
		for ctx.Err() == nil {
			if c, _, err := store.Get(ctx, id); err == nil && c.State.Terminal() {
				cancel()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// purgeLease stands in for the lease's TTL running out after a kill -9
// (natsx.LeaseTTL, 15 s): the test skips the wait, not the mechanism.
func (w *world) purgeLease() {
	w.t.Helper()
	kv, err := natsx.Bucket(ctxT(w.t), w.conn.JS, natsx.BucketLeases)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := kv.Purge(ctxT(w.t), campaign.LeaseKey); err != nil && !natsx.IsNotFound(err) {
		w.t.Fatal(err)
	}
}

func (w *world) waitState(id string, want campaign.State, timeout time.Duration) campaign.Campaign {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, _, err := w.store.Get(ctxT(w.t), id)
		if err == nil && c.State == want {
			return c
		}
		if time.Now().After(deadline) {
			st, _ := w.store.GetStats(ctxT(w.t), id)
			w.t.Fatalf("campaign %s is %s after %s, want %s (stats %+v)", id, c.State, timeout, want, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// notices counts the notify actions published for a campaign.
func (w *world) notices(id string) map[string]int {
	w.t.Helper()
	ctx := ctxT(w.t)
	cons, err := w.conn.JS.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"actions.notify"}})
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := w.conn.JS.Stream(ctx, natsx.StreamActions)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]int{}
	total := info.CachedInfo().State.Msgs
	for seen := uint64(0); seen < total; {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			w.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var a events.Action
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				w.t.Fatal(err)
			}
			if a.Campaign == id && a.Notice != nil && a.Notice.Template == events.NoticePasswordReset {
				out[a.User.CloudID]++
			}
		}
		if n == 0 {
			break
		}
		seen += uint64(n)
	}
	return out
}

func httpClientWithCA(caFile string) *http.Client {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16}}
}
