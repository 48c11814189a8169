package actuator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

const simSecret = "actuator-sim-secret"

// simGraph starts the Graph simulator and a real client of it.
func simGraph(t *testing.T, opts graphsim.Options) (*graphsim.Server, *msgraph.Client) {
	t.Helper()
	opts.ClientSecret = simSecret
	sim, err := graphsim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCAFile(ca); err != nil {
		t.Fatal(err)
	}
	c, err := msgraph.New(msgraph.Config{TenantID: sim.TenantID(), ClientID: sim.ClientID(), ClientSecret: simSecret,
		AuthorityHost: sim.AuthorityHost(), GraphBaseURL: sim.GraphBaseURL(), CAFile: ca, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return sim, c
}

// TestRequireChangeRefusedFor400 (issue 14 item 4): only Graph's
// "on-premises mastered" answer, for a user Graph reports as synced, sends
// the user down the synced chain; any other 400 Request_BadRequest is a
// dead letter that quotes Graph's message, and nothing else is written.
func TestRequireChangeRefusedFor400(t *testing.T) {
	const otherMsg = "Invalid value specified for property 'passwordProfile' of resource 'User'."
	other := fmt.Sprintf(`{"error":{"code":"Request_BadRequest","message":%q}}`, otherMsg)
	// A cloud-managed user told "on-premises mastered" (an object being
	// migrated, say): Graph's words alone do not make it synced.
	mastered := `{"error":{"code":"Request_BadRequest","message":"Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration."}}`
	tests := []struct {
		name      string
		synced    bool
		body      string // injected 400 answer to the PATCH; "" = the simulator's own
		wantChain bool
		wantMsg   string
	}{
		{"cloud_user_other_400", false, other, false, otherMsg},
		{"synced_user_other_400", true, other, false, otherMsg},
		{"cloud_user_told_mastered", false, mastered, false, "on-premises mastered"},
		{"synced_user_mastered", true, "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, client := simGraph(t, graphsim.Options{})
			sim.PutGroup("pending", "Password change pending")
			sim.PutUser(graphsim.User{ID: "u1", UserPrincipalName: "erin@example.test", OnPremisesImmutableId: "imm-erin",
				OnPremisesSyncEnabled: tt.synced, AccountEnabled: true})
			if tt.body != "" {
				sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, PathPrefix: "/v1.0/users/u1", Status: http.StatusBadRequest, Body: tt.body, Count: 1})
			}
			set := settings()
			set.Synced.TryCloudFlag = true
			set.Synced.RevokeSessions = true
			s := newService(t, client, set)
			err := s.Handle(context.Background(), action(events.ActionRequireChange, "erin@example.test", "imm-erin", 1), natsx.Meta{})
			var posts []string
			for _, r := range sim.Requests() {
				if r.Method == http.MethodPost {
					posts = append(posts, fmt.Sprintf("%s %d", r.Path, r.Status))
				}
			}
			if tt.wantChain {
				if err != nil || len(posts) != 2 {
					t.Fatalf("synced user: err %v, posts %v; want the chain (revoke, group add)", err, posts)
				}
				return
			}
			if !errors.Is(err, natsx.ErrPermanent) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want a dead letter quoting %q", err, tt.wantMsg)
			}
			if len(posts) != 0 {
				t.Fatalf("the chain ran for a 400 that is not the synced case: %v", posts)
			}
		})
	}
}

// TestWritesTakeEffectOnceWhenAnswersAreLost: Graph applies each write and
// loses its answer (a 5xx after the write, a reset after it, or no answer
// until the client times out); the in-process retry and a redelivery of
// the action read back instead of writing again. Counted by the
// simulator's effects, not by answers: every write took effect once.
func TestWritesTakeEffectOnceWhenAnswersAreLost(t *testing.T) {
	lost := []struct {
		name  string
		fault graphsim.Fault
	}{
		{"5xx_after_the_write", graphsim.Fault{Status: http.StatusInternalServerError, After: true}},
		{"reset_after_the_write", graphsim.Fault{Reset: true, After: true}},
		{"no_answer_after_the_write", graphsim.Fault{Hang: 10 * time.Second, After: true}},
	}
	type want map[string]int // effect kind -> count
	kinds := []struct {
		name   string
		synced bool
		setup  func(*config.Actuator)
		action events.ActionKind
		prefix []string // the writes that lose their answer (method path-prefix)
		want   want
	}{
		{"cloud_flag_and_revoke", false, func(s *config.Actuator) { s.CloudManaged.RevokeSessions = true }, events.ActionRequireChange,
			[]string{"PATCH /v1.0/users/", "POST /v1.0/users/"}, want{"PATCH": 1, "revoke": 1}},
		{"synced_chain", true, nil, events.ActionRequireChange,
			[]string{"POST /v1.0/users/", "POST /v1.0/groups/"}, want{"revoke": 1, "members": 1}},
		{"temporary_password", false, func(s *config.Actuator) { s.CloudManaged.Fallback = "temporary_password" }, events.ActionRequireChange,
			[]string{"PATCH /v1.0/users/"}, want{"PATCH": 2}}, // the flag (a no-op in Graph), then the password, once each
		{"password_policies", true, nil, events.ActionSetPasswordPolicies,
			[]string{"PATCH /v1.0/users/"}, want{"PATCH": 1}},
	}
	for _, k := range kinds {
		for _, l := range lost {
			t.Run(k.name+"/"+l.name, func(t *testing.T) {
				// The flag-only PATCH takes, except where the fallback is under test.
				sim, client := simGraph(t, graphsim.Options{ForceChangeApplies: k.name != "temporary_password"})
				sim.PutGroup("pending", "Password change pending")
				sim.PutUser(graphsim.User{ID: "u1", UserPrincipalName: "erin@example.test", OnPremisesImmutableId: "imm-erin",
					OnPremisesSyncEnabled: k.synced, AccountEnabled: true})
				set := settings()
				set.Synced.RevokeSessions = true
				if k.setup != nil {
					k.setup(&set)
				}
				s := newService(t, client, set)
				if k.name == "temporary_password" {
					// The flag PATCH passes (a no-op in Graph that no read-back
					// can tell from one never made); the password's answer is lost.
					sim.InjectFault(graphsim.Fault{Method: http.MethodPatch, Count: 1})
				}
				for _, p := range k.prefix {
					method, prefix, _ := strings.Cut(p, " ")
					f := l.fault
					f.Method, f.PathPrefix, f.Count = method, prefix, 2 // lost twice: an in-process retry meets it too
					sim.InjectFault(f)
				}
				a := action(k.action, "erin@example.test", "imm-erin", 1)
				if k.action == events.ActionSetPasswordPolicies {
					a.User.CloudID, a.Policies = "u1", "DisablePasswordExpiration"
				}
				var err error
				for range 5 { // JetStream redelivers what failed
					if err = s.Handle(context.Background(), a, natsx.Meta{}); err == nil {
						break
					}
					if errors.Is(err, natsx.ErrPermanent) {
						t.Fatalf("dead letter: %v", err)
					}
				}
				if err != nil {
					t.Fatalf("not done after 5 deliveries: %v", err)
				}
				got := want{}
				for _, e := range sim.Effects() {
					kind := e.Method
					switch {
					case strings.HasSuffix(e.Path, "/revokeSignInSessions"):
						kind = "revoke"
					case strings.Contains(e.Path, "/members/"):
						kind = "members"
					}
					got[kind]++
				}
				if fmt.Sprint(got) != fmt.Sprint(k.want) {
					t.Fatalf("effects %v, want %v (requests %v)", got, k.want, answered(sim))
				}
			})
		}
	}
}

func answered(sim *graphsim.Server) []string {
	var out []string
	for _, r := range sim.Requests() {
		out = append(out, fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status))
	}
	return out
}
