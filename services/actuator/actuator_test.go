package actuator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// fakeGraph is an in-memory Graph that records writes. failNext makes the
// next calls of an operation fail with the given errors, in order.
type fakeGraph struct {
	mu       sync.Mutex
	users    map[string]*graph.User
	groups   map[string]map[string]bool
	calls    []string
	failNext map[string][]error
	noopFlag bool // PATCH of the flag alone answers success and changes nothing
	// lostRevokes: the next revokes take effect, then fail with these errors
	// (the answer was lost: a timeout, a reset connection).
	lostRevokes []error
}

func newFakeGraph(users ...graph.User) *fakeGraph {
	f := &fakeGraph{users: map[string]*graph.User{}, groups: map[string]map[string]bool{"pending": {}}, failNext: map[string][]error{}}
	for _, u := range users {
		f.users[u.ID] = &u
	}
	return f
}

func (f *fakeGraph) record(op, id string) error {
	f.calls = append(f.calls, op+" "+id)
	if errs := f.failNext[op]; len(errs) > 0 {
		f.failNext[op] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *fakeGraph) user(id string) (*graph.User, error) {
	if u, ok := f.users[id]; ok {
		return u, nil
	}
	for _, u := range f.users {
		if strings.EqualFold(u.UPN, id) {
			return u, nil
		}
	}
	return nil, &graph.Error{Op: "GET /users", Status: http.StatusNotFound, Code: graph.CodeResourceNotFound}
}

func (f *fakeGraph) GetUser(_ context.Context, id string) (*graph.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("get", id); err != nil {
		return nil, err
	}
	u, err := f.user(id)
	if err != nil {
		return nil, err
	}
	c := *u
	return &c, nil
}

func (f *fakeGraph) FindByImmutableID(_ context.Context, imm string) (*graph.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("find", imm); err != nil {
		return nil, err
	}
	for _, u := range f.users {
		if u.ImmutableID == imm {
			return &graph.User{ID: u.ID, UPN: u.UPN, ImmutableID: u.ImmutableID}, nil
		}
	}
	return nil, nil
}

var onPremMastered = &graph.Error{Op: "PATCH /users", Status: 400, Code: graph.CodeBadRequest,
	Message: "Unable to update the specified properties for on-premises mastered Directory Sync objects"}

func (f *fakeGraph) SetForceChange(_ context.Context, id string, force, mfa bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record(fmt.Sprintf("force=%v", force), id); err != nil {
		return err
	}
	u, err := f.user(id)
	if err != nil {
		return err
	}
	if u.SyncEnabled {
		return onPremMastered
	}
	if !f.noopFlag {
		u.ForceChangeNextSignIn, u.ForceChangeWithMFA = force, mfa && force
	}
	return nil
}

func (f *fakeGraph) SetPassword(_ context.Context, id, pw string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("password", id); err != nil {
		return err
	}
	u, err := f.user(id)
	if err != nil {
		return err
	}
	u.ForceChangeNextSignIn = force
	return nil
}

func (f *fakeGraph) RevokeSessions(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("revoke", id); err != nil {
		return err
	}
	if u, err := f.user(id); err == nil {
		u.SessionsValidFrom = time.Now()
	}
	if len(f.lostRevokes) > 0 {
		err := f.lostRevokes[0]
		f.lostRevokes = f.lostRevokes[1:]
		return err
	}
	return nil
}

func (f *fakeGraph) AddGroupMember(_ context.Context, g, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("group+", id); err != nil {
		return err
	}
	f.groups[g][id] = true
	return nil
}

func (f *fakeGraph) RemoveGroupMember(_ context.Context, g, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("group-", id); err != nil {
		return err
	}
	delete(f.groups[g], id)
	return nil
}

func (f *fakeGraph) SetPasswordPolicies(_ context.Context, id, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.record("policies="+p, id); err != nil {
		return err
	}
	u, err := f.user(id)
	if err != nil {
		return err
	}
	u.PasswordPolicies = p
	return nil
}

// writes returns the recorded calls except reads.
func (f *fakeGraph) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "get ") && !strings.HasPrefix(c, "find ") {
			out = append(out, c)
		}
	}
	// A synced user's revoke and group add go out at once: their order is
	// the scheduler's, not the actuator's, and is shown revoke first.
	for i := 1; i < len(out); i++ {
		if id, ok := strings.CutPrefix(out[i-1], "group+ "); ok && out[i] == "revoke "+id {
			out[i-1], out[i] = out[i], out[i-1]
		}
	}
	return out
}

var (
	cloudUser  = graph.User{ID: "c1", UPN: "alice@example.test", ImmutableID: "imm-alice", AccountEnabled: true}
	syncedUser = graph.User{ID: "s1", UPN: "bob@example.test", ImmutableID: "imm-bob", SyncEnabled: true, AccountEnabled: true}
)

func settings() config.Actuator {
	s := config.Default().Actuator
	s.Synced.PendingGroupID = "pending"
	s.CloudManaged.RevokeSessions = false
	s.Retry.InitialInterval, s.Retry.MaxInterval, s.Retry.LongWait = time.Millisecond, 2*time.Millisecond, 100*time.Millisecond
	return s
}

func newService(t *testing.T, g graph.Client, set config.Actuator) *Service {
	t.Helper()
	_, conn := natstest.Run(t)
	s, err := New(context.Background(), Deps{JS: conn.JS, Graph: g, Settings: set, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func action(kind events.ActionKind, upn, imm string, seq int64) events.Action {
	ref := events.UserRef{ObjectGUID: "guid-" + upn, ImmutableID: imm, UPN: upn}
	return events.Action{ID: events.ActionID(string(kind), ref, fmt.Sprintf("ev%d", seq)), Kind: kind, Rule: "test",
		EventID: fmt.Sprintf("ev%d", seq), EventTime: time.Now(), User: ref, Seq: seq}
}

func policiesAction(_ string, seq int64) events.Action {
	a := action(events.ActionSetPasswordPolicies, "bob@example.test", "imm-bob", seq)
	a.User.CloudID, a.Policies = "s1", "DisablePasswordExpiration"
	return a
}

func undo(clear, required events.Action) events.Action {
	clear.Undoes = required.ID
	return clear
}

// clearFlagOption is actuator.undo.clear_cloud_flag: true (before issue 19, the default).
func clearFlagOption(s *config.Actuator) { s.Undo.ClearCloudFlag = true }

func TestStrategies(t *testing.T) {
	tests := []struct {
		name    string
		user    graph.User
		set     func(*config.Actuator)
		noop    bool
		actions []events.Action
		want    []string
	}{
		{"cloud_managed_gets_the_flag", cloudUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1)},
			[]string{"force=true c1"}},
		{"cloud_managed_with_revoke", cloudUser, func(s *config.Actuator) { s.CloudManaged.RevokeSessions = true }, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1)},
			[]string{"force=true c1", "revoke c1"}},
		{"synced_gets_the_chain", syncedUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1)},
			[]string{"revoke s1", "group+ s1"}},
		{"synced_tries_flag_then_chain_once", syncedUser, func(s *config.Actuator) { s.Synced.TryCloudFlag = true }, false,
			[]events.Action{action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1)},
			[]string{"force=true s1", "revoke s1", "group+ s1"}},
		{"noop_flag_falls_back_to_chain", cloudUser, nil, true,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1)},
			[]string{"force=true c1", "revoke c1", "group+ c1"}},
		{"noop_flag_falls_back_to_temporary_password", cloudUser, func(s *config.Actuator) { s.CloudManaged.Fallback = "temporary_password" }, true,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1)},
			[]string{"force=true c1", "password c1"}},
		// the option (clear at AD's change); by default the flag stays
		{"password_changed_clears_flag_and_group", cloudUser, clearFlagOption, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1), action(events.ActionClearChange, "alice@example.test", "imm-alice", 2)},
			[]string{"force=true c1", "force=false c1", "group- c1"}},
		{"password_changed_on_synced_leaves_group", syncedUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1), action(events.ActionClearChange, "bob@example.test", "imm-bob", 2)},
			[]string{"revoke s1", "group+ s1", "group- s1"}},
		{"cloud_managed_flag_kept_by_default", cloudUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1), action(events.ActionClearChange, "alice@example.test", "imm-alice", 2)},
			[]string{"force=true c1", "group- c1"}},
		{"undo_removes_from_group_only_what_was_added", cloudUser, clearFlagOption, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1),
				undo(action(events.ActionClearChange, "alice@example.test", "imm-alice", 2), action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1))},
			[]string{"force=true c1", "force=false c1"}},
		{"undo_of_the_chain_removes_from_group", syncedUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1),
				undo(action(events.ActionClearChange, "bob@example.test", "imm-bob", 2), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1))},
			[]string{"revoke s1", "group+ s1", "group- s1"}},
		{"undo_can_be_turned_off", cloudUser, func(s *config.Actuator) { s.Undo = config.Undo{} }, false,
			[]events.Action{action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1), action(events.ActionClearChange, "alice@example.test", "imm-alice", 2)},
			[]string{"force=true c1"}},
		{"redelivered_action_writes_once", syncedUser, nil, false,
			[]events.Action{action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1)},
			[]string{"revoke s1", "group+ s1"}},
		{"older_action_after_newer_is_skipped", cloudUser, nil, false,
			[]events.Action{action(events.ActionClearChange, "alice@example.test", "imm-alice", 5), action(events.ActionRequireChange, "alice@example.test", "imm-alice", 4)},
			[]string{"group- c1"}}, // only the newer clear; the older require is superseded
		{"policies_written_once", syncedUser, nil, false,
			[]events.Action{policiesAction("None", 1), policiesAction("None", 2)},
			[]string{"policies=DisablePasswordExpiration s1"}},
		{"upn_fallback_when_not_anchored", graph.User{ID: "c2", UPN: "carol@example.test"}, nil, false,
			[]events.Action{action(events.ActionRequireChange, "carol@example.test", "imm-carol", 1)},
			[]string{"force=true c2"}},
		{"upn_suffix_map", graph.User{ID: "c3", UPN: "dave@contoso.com"}, func(s *config.Actuator) {
			s.Identity.UPNSuffixMap = map[string]string{"corp.local": "contoso.com"}
		}, false,
			[]events.Action{action(events.ActionRequireChange, "dave@corp.local", "", 1)},
			[]string{"force=true c3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(tt.user)
			g.noopFlag = tt.noop
			set := settings()
			if tt.set != nil {
				tt.set(&set)
			}
			s := newService(t, g, set)
			for _, a := range tt.actions {
				if err := s.Handle(context.Background(), a, natsx.Meta{}); err != nil {
					t.Fatalf("Handle(%s): %v", a.Kind, err)
				}
			}
			if got := g.writes(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("writes = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestErrorOutcomes(t *testing.T) {
	throttled := func(after time.Duration) error {
		return &graph.Error{Op: "POST revoke", Status: 429, Code: "TooManyRequests", RetryAfter: after}
	}
	tests := []struct {
		name      string
		user      graph.User
		fail      map[string][]error
		upn       string
		wantErr   func(error) bool
		wantCalls int // calls of the failing write, including retries
	}{
		{"short_retry_after_is_waited_in_process", syncedUser, map[string][]error{"revoke": {throttled(10 * time.Millisecond)}}, "bob@example.test",
			func(err error) bool { return err == nil }, 2},
		{"long_retry_after_goes_back_to_jetstream", syncedUser, map[string][]error{"revoke": {throttled(time.Minute)}}, "bob@example.test",
			func(err error) bool { var rl *natsx.RetryLater; return errors.As(err, &rl) && rl.After == time.Minute }, 1},
		{"server_errors_are_retried_then_transient", syncedUser, map[string][]error{"revoke": {
			&graph.Error{Status: 500}, &graph.Error{Status: 503}, &graph.Error{Status: 502}, &graph.Error{Status: 504}}}, "bob@example.test",
			func(err error) bool { return err != nil && !errors.Is(err, natsx.ErrPermanent) }, 4},
		{"forbidden_is_permanent", syncedUser, map[string][]error{"revoke": {&graph.Error{Status: 403, Code: graph.CodeAuthDenied}}}, "bob@example.test",
			func(err error) bool { return errors.Is(err, natsx.ErrPermanent) }, 1},
		{"no_cloud_account_is_permanent", syncedUser, nil, "nobody@example.test",
			func(err error) bool { return errors.Is(err, natsx.ErrPermanent) && errors.Is(err, ErrNoCloudAccount) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(tt.user)
			g.failNext = tt.fail
			s := newService(t, g, settings())
			err := s.Handle(context.Background(), action(events.ActionRequireChange, tt.upn, "", 1), natsx.Meta{})
			if !tt.wantErr(err) {
				t.Fatalf("unexpected error outcome: %v", err)
			}
			n := 0
			for _, c := range g.writes() {
				if strings.HasPrefix(c, "revoke ") {
					n++
				}
			}
			if n != tt.wantCalls {
				t.Fatalf("revoke calls = %d, want %d (%v)", n, tt.wantCalls, g.writes())
			}
		})
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	g := newFakeGraph(syncedUser)
	s := newService(t, g, settings())
	a := action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1)
	a.DryRun = true
	if err := s.Handle(context.Background(), a, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if w := g.writes(); len(w) != 0 {
		t.Fatalf("dry run wrote %v", w)
	}
}

// TestRevokeWithLostAnswerIsNotSentAgain: a revoke whose answer is lost
// (timeout, reset connection, crash right after Graph answered) took effect;
// neither the in-process retry nor the redelivery sends a second one, which
// would sign out again whoever signed in meanwhile.
func TestRevokeWithLostAnswerIsNotSentAgain(t *testing.T) {
	reset := &graph.Error{Op: "POST revoke", Err: errors.New("connection reset by peer")}
	timeout := &graph.Error{Op: "POST revoke", Err: context.DeadlineExceeded}
	tests := []struct {
		name    string
		lost    []error
		handles int // deliveries of the action
	}{
		{"reset_retried_in_process", []error{reset}, 1},
		{"timeout_redelivered", []error{timeout}, 2},
		{"twice_lost", []error{reset, timeout}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newFakeGraph(syncedUser)
			g.lostRevokes = tt.lost
			s := newService(t, g, settings())
			a := action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1)
			var err error
			for i := 0; i < tt.handles; i++ {
				err = s.Handle(context.Background(), a, natsx.Meta{})
			}
			if err != nil {
				t.Fatalf("last delivery: %v", err)
			}
			if got := g.writes(); fmt.Sprint(got) != fmt.Sprint([]string{"revoke s1", "group+ s1"}) {
				t.Fatalf("writes = %v, want one revoke and one group add", got)
			}
		})
	}
	t.Run("revoke_that_did_not_happen_is_sent_again", func(t *testing.T) {
		g := newFakeGraph(syncedUser)
		g.failNext = map[string][]error{"revoke": {reset}}
		s := newService(t, g, settings())
		if err := s.Handle(context.Background(), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1), natsx.Meta{}); err != nil {
			t.Fatal(err)
		}
		if got := g.writes(); fmt.Sprint(got) != fmt.Sprint([]string{"revoke s1", "revoke s1", "group+ s1"}) {
			t.Fatalf("writes = %v, want the revoke sent again", got)
		}
	})
}

func TestNotifyAndAlertLeftToTheNotifier(t *testing.T) {
	for _, notifier := range []bool{false, true} {
		t.Run(fmt.Sprintf("notifier=%v", notifier), func(t *testing.T) {
			g := newFakeGraph(cloudUser)
			_, conn := natstest.Run(t)
			s, err := New(context.Background(), Deps{JS: conn.JS, Graph: g, Settings: settings(), Log: zerolog.Nop(), Notifier: notifier})
			if err != nil {
				t.Fatal(err)
			}
			n := action(events.ActionNotify, "alice@example.test", "imm-alice", 1)
			n.Notice = &events.Notice{Template: events.NoticeExpired}
			for _, a := range []events.Action{n, action(events.ActionAlert, "alice@example.test", "imm-alice", 2)} {
				if err := s.Handle(context.Background(), a, natsx.Meta{}); err != nil {
					t.Fatalf("%s: %v (a notify action must never be dead-lettered by the actuator)", a.Kind, err)
				}
			}
			if len(g.calls) != 0 {
				t.Fatalf("Graph calls for notify/alert: %v", g.calls)
			}
		})
	}
}

// TestUndoGate: an undo decided without cloud state waits (redelivery, no
// write) until Entra has the new password, and at the bound lifts a synced
// user's block anyway, with an alert.
func TestUndoGate(t *testing.T) {
	adSet := time.Now().Add(-time.Minute)
	gated := func(seq int64, until time.Time) events.Action {
		a := undo(action(events.ActionClearChange, "bob@example.test", "imm-bob", seq), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1))
		a.AwaitCloud = &events.UndoGate{ADPasswordSet: adSet, Until: until}
		return a
	}
	tests := []struct {
		name      string
		cloudSet  time.Time // the user's lastPasswordChangeDateTime
		until     time.Time
		wantLater bool
		want      []string
	}{
		{"waits_while_entra_has_the_old_password", adSet.Add(-time.Hour), time.Now().Add(time.Hour), true, []string{"revoke s1", "group+ s1"}},
		{"lifts_when_entra_has_it", adSet.Add(time.Second), time.Now().Add(time.Hour), false, []string{"revoke s1", "group+ s1", "group- s1"}},
		{"lifts_at_the_bound", adSet.Add(-time.Hour), time.Now().Add(-time.Second), false, []string{"revoke s1", "group+ s1", "group- s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := syncedUser
			u.LastPasswordChange = tt.cloudSet
			g := newFakeGraph(u)
			s := newService(t, g, settings())
			if err := s.Handle(context.Background(), action(events.ActionRequireChange, "bob@example.test", "imm-bob", 1), natsx.Meta{}); err != nil {
				t.Fatal(err)
			}
			err := s.Handle(context.Background(), gated(2, tt.until), natsx.Meta{NumDelivered: 1})
			var later *natsx.RetryLater
			if errors.As(err, &later) != tt.wantLater || (err != nil && !tt.wantLater) {
				t.Fatalf("Handle = %v, want retry later: %v", err, tt.wantLater)
			}
			if got := g.writes(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("writes = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestUndoGateCloudManaged: a cloud-managed user's gated undo waits for a
// cloud change at or after the threshold the evaluator put in the gate
// (UserChangeFrom, within the clock skew); the actuator adds no margin of
// its own.
func TestUndoGateCloudManaged(t *testing.T) {
	from := time.Now().Add(-time.Minute)
	tests := []struct {
		name      string
		from      time.Time
		cloudSet  time.Time // the user's lastPasswordChangeDateTime
		wantLater bool
	}{
		{"waits_for_a_change_after_the_threshold", from, from.Add(-undoClockSkew - time.Second), true},
		{"a_change_within_the_skew_counts", from, from.Add(-undoClockSkew + time.Second), false},
		{"a_change_after_the_threshold_counts", from, from.Add(time.Second), false},
		{"no_threshold_undoes_at_once", time.Time{}, time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := cloudUser
			u.LastPasswordChange = tt.cloudSet
			s := newService(t, newFakeGraph(u), settings())
			a := undo(action(events.ActionClearChange, "alice@example.test", "imm-alice", 2), action(events.ActionRequireChange, "alice@example.test", "imm-alice", 1))
			a.AwaitCloud = &events.UndoGate{RequiredAt: from.Add(-time.Hour), UserChangeFrom: tt.from, Until: time.Now().Add(time.Hour)}
			err := s.Handle(context.Background(), a, natsx.Meta{NumDelivered: 1})
			var later *natsx.RetryLater
			if errors.As(err, &later) != tt.wantLater || (err != nil && !tt.wantLater) {
				t.Fatalf("Handle = %v, want retry later: %v", err, tt.wantLater)
			}
		})
	}
}
