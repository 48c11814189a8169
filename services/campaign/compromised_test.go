package campaign_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

const confirmPath = "/v1.0/identityProtection/riskyUsers/confirmCompromised"

// ConfirmCompromised makes simClient a campaign.RiskMarker.
func (c *simClient) ConfirmCompromised(ctx context.Context, userIDs []string) error {
	status, hdr, raw, err := c.do(ctx, http.MethodPost, c.base+"/identityProtection/riskyUsers/confirmCompromised", map[string]any{"userIds": userIDs})
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return simError("POST confirmCompromised", status, hdr, raw)
	}
	return nil
}

// RiskyUsersSince makes simClient a campaign.RiskMarker.
func (c *simClient) RiskyUsersSince(ctx context.Context, since time.Time) ([]events.RiskyUser, error) {
	next := c.base + "/identityProtection/riskyUsers?$filter=" + url.QueryEscape("riskLastUpdatedDateTime ge "+since.UTC().Format(time.RFC3339))
	var out []events.RiskyUser
	for next != "" {
		status, hdr, raw, err := c.do(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, simError("GET riskyUsers", status, hdr, raw)
		}
		var env struct {
			Value    []events.RiskyUser `json:"value"`
			NextLink string             `json:"@odata.nextLink"`
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, err
		}
		out, next = append(out, env.Value...), env.NextLink
	}
	return out, nil
}

func simError(op string, status int, hdr http.Header, raw []byte) error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	ra, _ := strconv.Atoi(hdr.Get("Retry-After"))
	return &graph.Error{Op: op, Status: status, Code: e.Error.Code, Message: e.Error.Message, RetryAfter: time.Duration(ra) * time.Second}
}

// confirmCalls are the simulator's confirmCompromised requests, oldest first.
func (w *world) confirmCalls() []graphsim.Request {
	var out []graphsim.Request
	for _, r := range w.sim.Requests() {
		if r.Method == http.MethodPost && r.Path == confirmPath {
			out = append(out, r)
		}
	}
	return out
}

// confirmedByEffect counts, per user ID, the confirmCompromised calls that
// took effect naming it (whatever they were answered).
func (w *world) confirmedByEffect() map[string]int {
	out := map[string]int{}
	for _, e := range w.sim.Effects() {
		if e.Method != http.MethodPost || e.Path != confirmPath {
			continue
		}
		var body struct {
			UserIDs []string `json:"userIds"`
		}
		if err := json.Unmarshal(e.Body, &body); err != nil {
			w.t.Fatal(err)
		}
		for _, id := range body.UserIDs {
			out[id]++
		}
	}
	return out
}

func riskWorld(t *testing.T, withAD bool) *world {
	w := newWorld(t, withAD, graphsim.Options{Roles: append(slices.Clone(graphsim.DefaultRoles), graphsim.RiskRoles...)})
	w.runCfg = func(c *campaign.RunConfig) { c.RiskInterval = riskInterval }
	return w
}

// riskInterval paces the tests' Identity Protection calls (1s in production).
const riskInterval = 200 * time.Millisecond

// TestConfirmCompromised: a campaign with confirm_compromised marks each
// of its 130 cloud targets confirmedCompromised in exactly one call, 60
// users a call at most (60, 60, 10), one call per riskInterval, recorded and
// audited per user with Graph's answer; an answer lost after the call took
// is read back, not sent again; a campaign without the option makes no
// Identity Protection call; a tenant without Entra ID P2 (403) fails the
// marks, named for both causes and alerted, while the resets all happen.
func TestConfirmCompromised(t *testing.T) {
	const n = 130
	tests := []struct {
		name       string
		confirm    bool
		unlicensed bool
		lostAnswer bool   // the first call takes effect and is answered 500
		wantStatus string // every user's confirm_compromised record ("" = none)
		wantRisk   string // every user's riskState in the simulator ("" = no record)
		wantCalls  []int  // users per confirmCompromised request
	}{
		{name: "off", wantCalls: nil},
		{name: "on", confirm: true, wantStatus: campaign.StatusDone, wantRisk: graphsim.RiskStateConfirmedCompromised, wantCalls: []int{60, 60, 10}},
		{name: "answer lost", confirm: true, lostAnswer: true, wantStatus: campaign.StatusDone, wantRisk: graphsim.RiskStateConfirmedCompromised,
			wantCalls: []int{60, 60, 10}},
		{name: "unlicensed", confirm: true, unlicensed: true, wantStatus: campaign.StatusFailed, wantCalls: []int{60, 60, 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := riskWorld(t, false)
			const gid = "dddddddd-0000-4000-8000-00000000000a"
			w.sim.PutGroup(gid, "Breached")
			users := w.putCloudUsers(gid, "rk", n)
			w.sim.SetRiskLicensed(!tc.unlicensed)
			if tc.lostAnswer {
				w.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathPrefix: confirmPath, Status: 500, After: true, Count: 1})
			}
			c := w.startCampaign(campaign.Spec{Name: "mark " + tc.name, Include: campaign.Selector{EntraGroups: []string{gid}},
				Actions: campaign.Actions{RevokeSessions: true, ConfirmCompromised: tc.confirm}})
			if got, want := c.Preview.ByStep[campaign.StepConfirmCompromised], map[bool]int{true: n}[tc.confirm]; got != want {
				t.Fatalf("preview: %d confirm_compromised steps, want %d", got, want)
			}
			w.runInProcess(c.ID, campaign.NewPacer(1000, time.Second, 1), time.Minute)

			// The password work, whatever happened to the marks.
			st, err := w.svc.Status(ctxT(t), c.ID)
			if err != nil || st.Campaign.State != campaign.StateDone || st.Stats.Done != n || st.Stats.Failed != 0 {
				t.Fatalf("status %+v, %v", st, err)
			}
			revokes := w.applied().revoke
			for _, u := range users {
				if revokes[u.ID] != 1 {
					t.Fatalf("%s revoked %d times", u.UserPrincipalName, revokes[u.ID])
				}
			}
			w.checkCalls(tc.wantCalls, tc.unlicensed, riskInterval)
			w.checkMarks(c.ID, users, tc.wantStatus, tc.wantRisk, tc.unlicensed)

			wantConfirmed, wantFailed := 0, 0
			switch tc.wantStatus {
			case campaign.StatusDone:
				wantConfirmed = n
			case campaign.StatusFailed:
				wantFailed = n
			}
			if st.Stats.Confirmed != wantConfirmed || st.Stats.ConfirmFailed != wantFailed {
				t.Fatalf("stats: %d confirmed, %d failed; want %d, %d", st.Stats.Confirmed, st.Stats.ConfirmFailed, wantConfirmed, wantFailed)
			}
			// The lost answer's 60 users were found marked by the read-back.
			if want := map[bool]int{true: 60}[tc.lostAnswer]; st.Stats.Verified != want {
				t.Fatalf("%d marks verified by reading back, want %d", st.Stats.Verified, want)
			}
			var markAlerts int
			for _, a := range w.alerts() {
				if strings.Contains(a.Reason, "could not be marked compromised") {
					markAlerts++
					if !strings.Contains(a.Reason, fmt.Sprintf("%d of %d users", n, n)) {
						t.Errorf("alert: %s", a.Reason)
					}
				}
			}
			if want := map[bool]int{true: 1}[tc.unlicensed]; markAlerts != want {
				t.Fatalf("%d alerts about the marks, want %d", markAlerts, want)
			}
		})
	}
}

// checkCalls: the confirmCompromised requests carry want users each (none:
// no Identity Protection request at all), each user once, at least minGap
// apart, answered 204 (403 unlicensed; the lost answer's 500).
func (w *world) checkCalls(want []int, unlicensed bool, minGap time.Duration) {
	w.t.Helper()
	if want == nil {
		for _, r := range w.sim.Requests() {
			if strings.HasPrefix(r.Path, "/v1.0/identityProtection/") {
				w.t.Fatalf("Identity Protection request without the option: %s %s", r.Method, r.Path)
			}
		}
		return
	}
	calls := w.confirmCalls()
	seen := map[string]int{}
	var sizes []int
	for i, r := range calls {
		var body struct {
			UserIDs []string `json:"userIds"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			w.t.Fatal(err)
		}
		sizes = append(sizes, len(body.UserIDs))
		for _, id := range body.UserIDs {
			seen[id]++
		}
		if wantStatus := map[bool]int{false: http.StatusNoContent, true: http.StatusForbidden}[unlicensed]; r.Status != wantStatus && r.Status != 500 {
			w.t.Errorf("call %d answered %d, want %d", i, r.Status, wantStatus)
		}
		if i > 0 && r.Time.Sub(calls[i-1].Time) < minGap-10*time.Millisecond {
			w.t.Errorf("calls %d and %d %s apart, want at least %s", i-1, i, r.Time.Sub(calls[i-1].Time), minGap)
		}
	}
	if !slices.Equal(sizes, want) {
		w.t.Fatalf("confirmCompromised calls of %v users, want %v", sizes, want)
	}
	for id, k := range seen {
		if k != 1 {
			w.t.Fatalf("user %s sent in %d calls", id, k)
		}
	}
}

// checkMarks: each user's record, audit record and simulated risk state.
func (w *world) checkMarks(id string, users []graphsim.User, wantStatus, wantRisk string, unlicensed bool) {
	w.t.Helper()
	rep, err := w.svc.Report(ctxT(w.t), id)
	if err != nil {
		w.t.Fatal(err)
	}
	effects := w.confirmedByEffect()
	byCloud := map[string]campaign.ReportRow{}
	for _, row := range rep.Users {
		byCloud[row.CloudID] = row
	}
	for _, u := range users {
		row := byCloud[u.ID]
		if row.Outcome != campaign.StatusDone {
			w.t.Fatalf("%s: outcome %s (a mark's failure is not the reset's)", u.UserPrincipalName, row.Outcome)
		}
		res, ok := row.Steps[campaign.StepConfirmCompromised]
		switch {
		case wantStatus == "" && ok:
			w.t.Fatalf("%s has a confirm_compromised step without the option", u.UserPrincipalName)
		case wantStatus == "":
		case res == nil || res.Status != wantStatus:
			w.t.Fatalf("%s: confirm_compromised %+v, want %s", u.UserPrincipalName, res, wantStatus)
		case unlicensed && (res.HTTP != http.StatusForbidden || !strings.Contains(res.Detail, "Entra ID P2") ||
			!strings.Contains(res.Detail, "IdentityRiskyUser.ReadWrite.All")):
			w.t.Fatalf("%s: a 403's record names neither cause: %+v", u.UserPrincipalName, res)
		}
		ru, marked := w.sim.RiskyUser(u.ID)
		if got := map[bool]string{true: ru.RiskState}[marked]; got != wantRisk {
			w.t.Fatalf("%s: riskState %q, want %q", u.UserPrincipalName, got, wantRisk)
		}
		if want := map[bool]int{true: 1}[wantRisk != ""]; effects[u.ID] != want {
			w.t.Fatalf("%s confirmed compromised %d times, want %d", u.UserPrincipalName, effects[u.ID], want)
		}
	}
	audits := w.auditSteps(campaign.StepConfirmCompromised)
	wantOutcome := map[bool]string{false: events.OutcomeOK, true: events.OutcomeFailed}[unlicensed]
	if want := map[bool]int{true: len(users)}[wantStatus != ""]; len(audits) != want {
		w.t.Fatalf("%d confirm_compromised audit records, want %d", len(audits), want)
	}
	for _, a := range audits {
		if a.Outcome != wantOutcome || a.CloudID == "" {
			w.t.Fatalf("audit record %+v, want outcome %s", a, wantOutcome)
		}
	}
}

// TestConfirmCompromisedSyncedUsers: AD-selected synced users are marked
// too: the preview finds their cloud accounts by UPN, and takes one only
// when its onPremisesImmutableId is the user's objectGUID (a namesake is
// not marked); a user without a cloud account is reset in AD, not marked.
// The option alone, without a reset, is refused.
func TestConfirmCompromisedSyncedUsers(t *testing.T) {
	w := riskWorld(t, true)
	ad := w.adUsers(3)
	w.scope.IncludeDisabled = true // adtest's fast users are disabled
	var mirrors []string
	for i, u := range ad[:2] {
		m := graphsim.User{ID: fmt.Sprintf("5e5e5e5e-%04d-4000-8000-000000000000", i), UserPrincipalName: u.UPN,
			OnPremisesImmutableId: u.ImmutableID, OnPremisesSyncEnabled: true, AccountEnabled: true}
		w.sim.PutUser(m)
		mirrors = append(mirrors, m.ID)
	}
	// ad[2]'s UPN in the cloud, but another account (not its objectGUID).
	const namesake = "5e5e5e5e-9999-4000-8000-000000000000"
	w.sim.PutUser(graphsim.User{ID: namesake, UserPrincipalName: ad[2].UPN, OnPremisesImmutableId: ad[0].ImmutableID,
		OnPremisesSyncEnabled: true, AccountEnabled: true})

	if _, err := w.svc.Create(ctxT(t), campaign.Spec{Name: "mark only", Include: campaign.Selector{OUs: []string{w.ou}},
		Actions: campaign.Actions{ConfirmCompromised: true}}, "alice"); !errors.Is(err, campaign.ErrInvalid) {
		t.Fatalf("confirm_compromised without a reset: %v", err)
	}
	c := w.startCampaign(campaign.Spec{Name: "mark synced", Include: campaign.Selector{OUs: []string{w.ou}},
		Actions: campaign.Actions{RequireChange: true, ConfirmCompromised: true}})
	if p := c.Preview; p.ByStep[campaign.StepADMustChange] != 3 || p.ByStep[campaign.StepConfirmCompromised] != 2 {
		t.Fatalf("preview steps %v", p.ByStep)
	}
	w.runInProcess(c.ID, campaign.NewPacer(1000, time.Second, 1), time.Minute)

	st, err := w.svc.Status(ctxT(t), c.ID)
	if err != nil || st.Campaign.State != campaign.StateDone || st.Stats.Done != 3 || st.Stats.Confirmed != 2 {
		t.Fatalf("status %+v, %v", st.Stats, err)
	}
	for _, u := range ad {
		if v := w.pwdLastSet(u.DN); v != 0 {
			t.Fatalf("%s: pwdLastSet %d, want 0", u.UPN, v)
		}
	}
	w.checkCalls([]int{2}, false, 0)
	for _, id := range mirrors {
		if ru, ok := w.sim.RiskyUser(id); !ok || ru.RiskState != graphsim.RiskStateConfirmedCompromised {
			t.Fatalf("synced user %s: %+v", id, ru)
		}
	}
	if ru, ok := w.sim.RiskyUser(namesake); ok {
		t.Fatalf("the namesake was marked: %+v", ru)
	}
	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rep.Users {
		_, marked := row.Steps[campaign.StepConfirmCompromised]
		if want := row.UPN != strings.ToLower(ad[2].UPN); marked != want || row.Outcome != campaign.StatusDone {
			t.Fatalf("%s: confirm_compromised step %v, want %v; outcome %s", row.UPN, marked, want, row.Outcome)
		}
	}
}

// TestConfirmCompromisedResumesAfterStop: the runner stops while a
// confirmCompromised call that took effect is unanswered (the process
// going away); the next run finds the call's intent, reads the 60 users
// back (confirmedCompromised) instead of sending them again, and sends
// the 10 never sent: each user is marked by exactly one call.
func TestConfirmCompromisedResumesAfterStop(t *testing.T) {
	w := riskWorld(t, false)
	w.runCfg = func(c *campaign.RunConfig) { c.RiskInterval, c.UncertainWait = riskInterval, 100*time.Millisecond }
	users := w.putCloudUsers("", "rs", 70)
	var upns []string
	for _, u := range users {
		upns = append(upns, u.UserPrincipalName)
	}
	c := w.startCampaign(campaign.Spec{Name: "mark resume", Include: campaign.Selector{UPNs: upns},
		Actions: campaign.Actions{RevokeSessions: true, ConfirmCompromised: true}})

	held := make(chan struct{}, 1)
	w.sim.OnRequest(func(r graphsim.Request) {
		if r.Path == confirmPath && r.Status == 0 {
			select {
			case held <- struct{}{}:
			default:
			}
		}
	})
	w.sim.InjectFault(graphsim.Fault{Method: http.MethodPost, PathPrefix: confirmPath, After: true, Hang: 30 * time.Second, Count: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := w.runner(&campaign.RunnerDeps{Batch: w.client, Pacer: campaign.NewPacer(1000, time.Second, 1), Risk: w.client,
		Cfg: campaign.RunConfig{PollEvery: 50 * time.Millisecond, RiskInterval: riskInterval, GraphBaseURL: w.graphBase}}, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("no confirmCompromised call was sent")
	}
	cancel() // the process goes away with the call unanswered
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.sim.OnRequest(nil)
	if got := w.confirmedByEffect(); len(got) != 60 {
		t.Fatalf("the first call marked %d users, want 60", len(got))
	}

	w.runInProcess(c.ID, campaign.NewPacer(1000, time.Second, 1), time.Minute)
	st, err := w.svc.Status(ctxT(t), c.ID)
	if err != nil || st.Campaign.State != campaign.StateDone || st.Stats.Done != 70 || st.Stats.Confirmed != 70 {
		t.Fatalf("status %+v, %v", st.Stats, err)
	}
	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	for _, row := range rep.Users {
		if res := row.Steps[campaign.StepConfirmCompromised]; res != nil && res.Verified {
			verified++
		}
	}
	if verified != 60 {
		t.Fatalf("%d marks found by reading back, want 60", verified)
	}
	w.checkCalls([]int{60, 10}, false, 0) // two runs: the second starts unpaced
	w.checkMarks(c.ID, users, campaign.StatusDone, graphsim.RiskStateConfirmedCompromised, false)
}
