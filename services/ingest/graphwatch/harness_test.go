package graphwatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/pwsync/pwsync/shared/logx"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/services/ingest/webhook"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

const simSecret = "sim-app-secret"

// env is one test's world: real NATS, the Graph simulator, a real webhook
// receiver (TLS) publishing to NATS, and an msgraph client on the simulator.
type env struct {
	t       *testing.T
	emb     *natsx.Embedded
	conn    *natsx.Conn
	sim     *graphsim.Server
	client  *msgraph.Client
	rcv     *httptest.Server
	hook    *webhook.Handler
	secrets *switchLookup
	users   *collector
	logs    syncBuffer // everything every component logged, to look for secrets
	log     zerolog.Logger
}

type syncBuffer = logx.Buffer

// switchLookup is the receiver's SecretLookup: the watcher of choice, or
// nothing while off (notifications are then dropped, as forged ones are).
type switchLookup struct {
	w   atomic.Pointer[graphwatch.Watcher]
	off atomic.Bool
}

func (l *switchLookup) ClientState(id string) (string, bool) {
	w := l.w.Load()
	if w == nil || l.off.Load() {
		return "", false
	}
	return w.ClientState(id)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, graphsim.Options{})
}

// newEnvWith is newEnv with simulator options (the secret and the
// notification client are the env's).
func newEnvWith(t *testing.T, opts graphsim.Options) *env {
	t.Helper()
	e := &env{t: t, secrets: &switchLookup{}}
	// Info and above go to the test's output; everything to the buffer.
	testOut := &zerolog.FilteredLevelWriter{Writer: zerolog.LevelWriterAdapter{Writer: zerolog.NewTestWriter(t)}, Level: zerolog.InfoLevel}
	e.log = zerolog.New(zerolog.MultiLevelWriter(testOut, &e.logs)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	e.emb, e.conn = natstest.Run(t)
	e.hook = webhook.NewHandler(webhook.Config{}, e.secrets, natsx.NewPublisher(e.conn.JS), e.log.With().Str("component", "webhook").Logger())
	e.rcv = httptest.NewTLSServer(e.hook)
	t.Cleanup(e.rcv.Close)

	opts.ClientSecret, opts.NotificationClient = simSecret, e.rcv.Client()
	sim, err := graphsim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	e.sim = sim
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCAFile(ca); err != nil {
		t.Fatal(err)
	}
	e.client, err = msgraph.New(msgraph.Config{TenantID: sim.TenantID(), ClientID: sim.ClientID(), ClientSecret: simSecret,
		AuthorityHost: sim.AuthorityHost(), GraphBaseURL: sim.GraphBaseURL(), CAFile: ca, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.client.Close)
	e.users = collect(t, e.conn.JS)
	return e
}

// config is a watcher config for this env; tests adjust it.
func (e *env) config(holder string) graphwatch.Config {
	return graphwatch.Config{
		NotificationURL: e.rcv.URL + webhook.PathNotifications,
		LifecycleURL:    e.rcv.URL + webhook.PathLifecycle,
		CheckEvery:      100 * time.Millisecond,
		DeltaInterval:   time.Hour, // rounds come from notifications unless a test says otherwise
		Holder:          holder,
	}
}

// start runs a watcher on js until the test ends; the first one started
// answers the receiver's lookups.
func (e *env) start(cfg graphwatch.Config, js jetstream.JetStream) *graphwatch.Watcher {
	e.t.Helper()
	w, err := graphwatch.New(cfg, e.client, js, e.log)
	if err != nil {
		e.t.Fatalf("graphwatch.New: %v", err)
	}
	e.secrets.w.CompareAndSwap(nil, w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Run did not return 10s after its context ended")
		}
	})
	return w
}

// subscription waits for exactly one subscription at the simulator, other
// than not (when given), that the receiver's watcher knows, and returns it.
// (Graph knows a new subscription a moment before the manager has stored
// it: a notification in between is dropped, and the delta round that every
// new subscription triggers picks its change up.)
func (e *env) subscription(not string) graphsim.Subscription {
	e.t.Helper()
	var sub graphsim.Subscription
	waitFor(e.t, 10*time.Second, "one subscription at the simulator, known to the receiver", func() bool {
		subs := e.sim.Subscriptions()
		if len(subs) != 1 || subs[0].ID == not {
			return false
		}
		sub = subs[0]
		secret, ok := e.secrets.ClientState(sub.ID)
		return ok && secret == sub.ClientState
	})
	return sub
}

// waitRounds waits until w completed at least n delta rounds.
func waitRounds(t *testing.T, w *graphwatch.Watcher, n uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d delta rounds", n), func() bool { return w.Stats().Rounds >= n })
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func userID(i int) string { return fmt.Sprintf("aaaaaaaa-0000-4000-8000-%012d", i) }

func seedUsers(s *graphsim.Server, n int) {
	for i := range n {
		s.PutUser(graphsim.User{ID: userID(i), UserPrincipalName: fmt.Sprintf("user%d@contoso.test", i), AccountEnabled: true,
			PasswordPolicies: "None", OnPremisesSyncEnabled: i%2 == 0, OnPremisesImmutableId: fmt.Sprintf("imm%d", i)})
	}
}

// setPolicies changes a user's passwordPolicies in the simulator, as an
// admin or a sync run would: Graph then notifies.
func setPolicies(t *testing.T, s *graphsim.Server, id, policies string) {
	t.Helper()
	u, ok := s.User(id)
	if !ok {
		t.Fatalf("no user %s", id)
	}
	u.PasswordPolicies = policies
	s.PutUser(u)
}

// collector records every events.graph.user event stored in the stream.
type collector struct {
	mu    sync.Mutex
	evs   []events.Envelope
	at    []time.Time
	msgID []string // Nats-Msg-Id
}

func collect(t *testing.T, js jetstream.JetStream) *collector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, natsx.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"events.graph.user"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var env events.Envelope
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			return
		}
		c.mu.Lock()
		c.evs = append(c.evs, env)
		c.at = append(c.at, time.Now())
		c.msgID = append(c.msgID, m.Headers().Get(nats.MsgIdHdr))
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return c
}

// stored is one stored user event.
type stored struct {
	env   events.Envelope
	user  events.CloudUser
	at    time.Time // when the collector got it
	msgID string
}

// find returns the first stored user event matching.
func (c *collector) find(match func(events.CloudUser) bool) (stored, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, env := range c.evs {
		var u events.CloudUser
		if json.Unmarshal(env.Data, &u) == nil && match(u) {
			return stored{env: env, user: u, at: c.at[i], msgID: c.msgID[i]}, true
		}
	}
	return stored{}, false
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// waitUser waits for a stored event about user id with these policies.
func (c *collector) waitUser(t *testing.T, id, policies string) stored {
	t.Helper()
	var s stored
	waitFor(t, 10*time.Second, fmt.Sprintf("user event %s with passwordPolicies %q", id, policies), func() bool {
		var ok bool
		s, ok = c.find(func(u events.CloudUser) bool { return u.ID == id && u.PasswordPolicies == policies })
		return ok
	})
	return s
}

// all returns every stored user event.
func (c *collector) all() []stored {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]stored, 0, len(c.evs))
	for i, env := range c.evs {
		var u events.CloudUser
		if json.Unmarshal(env.Data, &u) == nil {
			out = append(out, stored{env: env, user: u, at: c.at[i], msgID: c.msgID[i]})
		}
	}
	return out
}
