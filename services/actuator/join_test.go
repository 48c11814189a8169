package actuator

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/cloudjoin"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// joinedService is an actuator with a cloud join loaded from the simulator
// (and, with poll > 0, following its delta).
func joinedService(t *testing.T, client *msgraph.Client, set config.Actuator, poll time.Duration) (*Service, *cloudjoin.Index) {
	t.Helper()
	_, conn := natstest.Run(t)
	ix := cloudjoin.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ix.Run(ctx, cloudjoin.Sync{Source: client, Poll: poll, Log: zerolog.Nop()})
	}()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !ix.Loaded() {
		if time.Now().After(deadline) {
			t.Fatal("cloud join not loaded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s, err := New(context.Background(), Deps{JS: conn.JS, Graph: client, Settings: set, Log: zerolog.Nop(), Join: ix})
	if err != nil {
		t.Fatal(err)
	}
	return s, ix
}

// userRequests are the logged requests about a user (its own paths and
// group adds naming it), as "METHOD path-tail".
func userRequests(sim *graphsim.Server, id string) (out []string, at []time.Time) {
	for _, r := range sim.Requests() {
		if !strings.Contains(r.Path, "/users/"+id) && !(strings.Contains(r.Path, "/groups/") && strings.Contains(string(r.Body), id)) &&
			!strings.Contains(r.Query, id) {
			continue
		}
		tail := r.Path[strings.LastIndex(r.Path, "/")+1:]
		if tail == id {
			tail = "user"
		}
		out = append(out, r.Method+" "+tail)
		at = append(at, r.Time)
	}
	return out, at
}

// TestJoinedResetWritesFirst (issue 21 items 1-2): with the cloud join
// loaded, a reset's first Graph request is its write; a synced user's revoke
// and group add go out at once, a cloud-managed user's read-back and revoke
// at once after the PATCH. Each request takes 150 ms, so "at once" shows as
// arrivals well under one request apart.
func TestJoinedResetWritesFirst(t *testing.T) {
	const lat = 150 * time.Millisecond
	sim, client := simGraph(t, graphsim.Options{ForceChangeApplies: true})
	sim.PutGroup("pending", "Password change pending")
	sim.PutUser(graphsim.User{ID: "c1", UserPrincipalName: "carol@example.test", OnPremisesImmutableId: "imm-carol", AccountEnabled: true})
	sim.PutUser(graphsim.User{ID: "s1", UserPrincipalName: "bob@example.test", OnPremisesImmutableId: "imm-bob",
		OnPremisesSyncEnabled: true, AccountEnabled: true})
	set := settings()
	set.CloudManaged.RevokeSessions, set.CloudManaged.Verify = true, true
	s, _ := joinedService(t, client, set, 0)
	sim.SetLatency(lat)
	sim.ResetRequests()

	tests := []struct {
		upn, imm, id string
		first        []string // the first requests, in any order, all within one latency
		then         []string
	}{
		{"bob@example.test", "imm-bob", "s1", []string{"POST revokeSignInSessions", "POST $ref"}, nil},
		{"carol@example.test", "imm-carol", "c1", []string{"PATCH user"}, []string{"GET user", "POST revokeSignInSessions"}},
	}
	for i, tt := range tests {
		t.Run(tt.upn, func(t *testing.T) {
			if err := s.Handle(context.Background(), action(events.ActionRequireChange, tt.upn, tt.imm, int64(i+1)), natsx.Meta{}); err != nil {
				t.Fatal(err)
			}
			got, at := userRequests(sim, tt.id)
			want := len(tt.first) + len(tt.then)
			if len(got) != want {
				t.Fatalf("requests %v, want %d: %v then %v", got, want, tt.first, tt.then)
			}
			if !sameSet(got[:len(tt.first)], tt.first) || !sameSet(got[len(tt.first):], tt.then) {
				t.Fatalf("requests %v, want %v (no read before the write), then %v", got, tt.first, tt.then)
			}
			for _, group := range [][]time.Time{at[:len(tt.first)], at[len(tt.first):]} {
				if len(group) == 2 && absDur(group[1].Sub(group[0])) > lat/2 {
					t.Fatalf("requests %v arrived %v apart: one after the other, not at once", got, group[1].Sub(group[0]))
				}
			}
		})
	}
}

// TestStaleJoinRecovers: the cloud account the join holds was deleted and
// recreated under a new ID (same anchor); the write's 404 makes the
// actuator look the user up again and write to the new account, once.
func TestStaleJoinRecovers(t *testing.T) {
	sim, client := simGraph(t, graphsim.Options{ForceChangeApplies: true})
	sim.PutUser(graphsim.User{ID: "old", UserPrincipalName: "erin@example.test", OnPremisesImmutableId: "imm-erin", AccountEnabled: true})
	set := settings()
	s, ix := joinedService(t, client, set, 0) // no delta: the join stays stale
	if !sim.PurgeUser("old") {
		t.Fatal("purge failed")
	}
	sim.PutUser(graphsim.User{ID: "new", UserPrincipalName: "erin@example.test", OnPremisesImmutableId: "imm-erin", AccountEnabled: true})
	if e, ok := ix.ByImmutableID("imm-erin"); !ok || e.ID != "old" {
		t.Fatalf("join %+v, %v: want the stale one", e, ok)
	}
	if err := s.Handle(context.Background(), action(events.ActionRequireChange, "erin@example.test", "imm-erin", 1), natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if u, _ := sim.User("new"); !u.ForceChangePasswordNextSignIn {
		t.Fatal("the recreated account was not flagged")
	}
	var patches []string
	for _, e := range sim.Effects() {
		if e.Method == http.MethodPatch {
			patches = append(patches, e.Path)
		}
	}
	if len(patches) != 1 || !strings.HasSuffix(patches[0], "/new") {
		t.Fatalf("PATCH effects %v, want one, on the new account", patches)
	}
	if e, ok := ix.ByImmutableID("imm-erin"); !ok || e.ID != "new" {
		t.Fatalf("join after recovery %+v, %v: want the new account", e, ok)
	}
}

// TestDeltaChangesStrategy: the join follows delta; when Entra Connect
// starts (or stops) syncing a user, the next reset takes the other
// strategy without reading the user first.
func TestDeltaChangesStrategy(t *testing.T) {
	sim, client := simGraph(t, graphsim.Options{ForceChangeApplies: true})
	sim.PutGroup("pending", "Password change pending")
	dana := graphsim.User{ID: "d1", UserPrincipalName: "dana@example.test", OnPremisesImmutableId: "imm-dana", AccountEnabled: true}
	sim.PutUser(dana)
	set := settings()
	set.CloudManaged.Verify = false
	s, ix := joinedService(t, client, set, 50*time.Millisecond)

	steps := []struct {
		synced bool
		want   []string
	}{
		{false, []string{"PATCH user"}},
		{true, []string{"POST revokeSignInSessions", "POST $ref"}},
		{false, []string{"PATCH user"}},
	}
	for i, st := range steps {
		dana.OnPremisesSyncEnabled = st.synced
		sim.PutUser(dana)
		deadline := time.Now().Add(5 * time.Second)
		for e, _ := ix.ByID("d1"); e.SyncEnabled != st.synced; e, _ = ix.ByID("d1") {
			if time.Now().After(deadline) {
				t.Fatalf("step %d: delta did not carry onPremisesSyncEnabled=%v to the join", i, st.synced)
			}
			time.Sleep(10 * time.Millisecond)
		}
		sim.ResetRequests()
		if err := s.Handle(context.Background(), action(events.ActionRequireChange, "dana@example.test", "imm-dana", int64(i+1)), natsx.Meta{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := userRequests(sim, "d1"); !sameSet(got, st.want) {
			t.Fatalf("step %d (synced %v): requests %v, want %v", i, st.synced, got, st.want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
