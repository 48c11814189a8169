package campaign_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// lossyAD is an ADWriter that loses the answer of chosen writes: "took"
// ones reach the DC (then hook runs, before the runner hears anything),
// "dropped" ones never leave. Either way the runner sees a network error.
type lossyAD struct {
	inner   campaign.ADWriter
	mu      sync.Mutex
	took    map[string]func() // DN -> what happens before the lost answer
	dropped map[string]bool
	calls   map[string]int // ForceChange calls that reached the DC, by DN
}

func (l *lossyAD) ForceChange(ctx context.Context, dn string) (string, error) {
	l.mu.Lock()
	drop := l.dropped[dn]
	delete(l.dropped, dn)
	hook, lose := l.took[dn]
	delete(l.took, dn)
	if !drop {
		l.calls[dn]++
	}
	l.mu.Unlock()
	if drop {
		return "", errors.New("connection reset (injected, before the request left)")
	}
	ans, err := l.inner.ForceChange(ctx, dn)
	if err != nil || !lose {
		return ans, err
	}
	if hook != nil {
		hook()
	}
	return "", errors.New("connection reset (injected, after the DC applied the write)")
}

func (l *lossyAD) PwdLastSet(ctx context.Context, dn string) (int64, error) {
	return l.inner.PwdLastSet(ctx, dn)
}

// lossyBatch loses the answer of the first must-change PATCH of chosen
// users after the simulator applied it; hook runs before the runner hears.
type lossyBatch struct {
	inner graph.Batcher
	mu    sync.Mutex
	lose  map[string]func() // cloud ID -> hook (may be nil)
}

func (l *lossyBatch) Batch(ctx context.Context, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	resps, err := l.inner.Batch(ctx, reqs)
	if err != nil {
		return resps, err
	}
	for i, r := range reqs {
		id := strings.TrimPrefix(r.URL, "/users/")
		if r.Method != http.MethodPatch || strings.Contains(id, "/") {
			continue
		}
		l.mu.Lock()
		hook, ok := l.lose[id]
		delete(l.lose, id)
		l.mu.Unlock()
		if !ok {
			continue
		}
		if hook != nil {
			hook()
		}
		resps[i] = graph.BatchResponse{ID: r.ID, Err: &graph.Error{Op: "$batch PATCH " + r.URL, Message: "no response for this item (injected)"}}
	}
	return resps, nil
}

// TestReadBackCountsAPasswordChangedSince: a must-change whose answer was
// lost but which took, after which the user set a new password, is done:
// the read-back sees no flag (cloud) or a pwdLastSet that is not 0 (AD), but
// a password change at or after the write was sent, and does not force a
// second change. Controls: a lost answer with no change since (flag / 0
// read back: done), and a write that never left (old pwdLastSet: written
// again, once).
func TestReadBackCountsAPasswordChangedSince(t *testing.T) {
	// The kinder world where the flag-only PATCH takes: the read-back of a
	// flag is what is under test (verify_test.go has the world where it
	// never takes).
	w := newWorld(t, true, graphsim.Options{ForceChangeApplies: true})
	changed := w.dc.CreateUser(t, w.ou, "rbchg", adtest.UserOpts{})
	lost := w.dc.CreateUser(t, w.ou, "rblost", adtest.UserOpts{})
	dropped := w.dc.CreateUser(t, w.ou, "rbdrop", adtest.UserOpts{})
	created := time.Now()
	const gid = "dddddddd-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "Readback")
	cloud := w.putCloudUsers(gid, "rb", 3) // 0: answer lost, then the user changes the password; 1: answer lost; 2: normal

	ad := &lossyAD{inner: w.ldap, calls: map[string]int{}, dropped: map[string]bool{dropped.DN: true},
		took: map[string]func(){
			changed.DN: func() { w.dc.ResetPassword(t, changed.DN, "Chosen.By-User-7", false) },
			lost.DN:    nil,
		}}
	userChanges := func(id string) func() {
		return func() {
			u, _ := w.sim.User(id)
			u.ForceChangePasswordNextSignIn, u.LastPasswordChangeDateTime = false, time.Now().UTC()
			w.sim.PutUser(u)
		}
	}
	batch := &lossyBatch{inner: w.client, lose: map[string]func(){cloud[0].ID: userChanges(cloud[0].ID), cloud[1].ID: nil}}

	c, err := w.svc.Create(ctxT(t), campaign.Spec{Name: "read-back", Include: campaign.Selector{OUs: []string{w.ou}, EntraGroups: []string{gid}},
		Actions: campaign.Actions{RequireChange: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c, err = w.svc.Preview(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if c.Preview.Total != 6 || c.Verify == nil {
		t.Fatalf("preview: %+v, verify %v", c.Preview, c.Verify)
	}
	// No wait: the accounts' own pwdLastSet (their creation) is within the
	// second of clock skew the read-back allows, and must still not be
	// taken for a password set after the write (it is the planned value).
	if since := time.Since(created); since > 900*time.Millisecond {
		t.Logf("accounts created %v before the start: the case of a pwdLastSet within the skew is not exercised", since)
	}
	if _, err := w.svc.Start(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	w.runInProcessWith(c.ID, batch, ad, campaign.NewPacer(100, time.Second, 1), time.Minute)

	// AD: one modify each reached the DC, except the dropped one (two: the
	// first never left); the user's own new password stands.
	for _, tc := range []struct {
		u         adtest.User
		calls     int
		wantZero  bool
		wantInLog string
	}{
		{changed, 1, false, "password changed after the unanswered write"},
		{lost, 1, true, ""},
		{dropped, 1, true, ""},
	} {
		if got := ad.calls[tc.u.DN]; got != tc.calls {
			t.Errorf("%s: %d writes reached the DC, want %d", tc.u.SAM, got, tc.calls)
		}
		if v := w.pwdLastSet(tc.u.DN); (v == 0) != tc.wantZero {
			t.Errorf("%s: pwdLastSet=%d, want zero=%v", tc.u.SAM, v, tc.wantZero)
		}
	}
	// Cloud: one flag-only PATCH applied per user; the user who changed the
	// password has no flag again.
	a := w.applied()
	for i, u := range cloud {
		if a.flag[u.ID] != 1 || a.password[u.ID] != 0 || a.revoke[u.ID] != 0 {
			t.Errorf("cloud user %d: %d flag PATCHes, %d password PATCHes, %d revokes applied, want 1/0/0", i, a.flag[u.ID], a.password[u.ID], a.revoke[u.ID])
		}
		got, _ := w.sim.User(u.ID)
		if got.ForceChangePasswordNextSignIn != (i != 0) {
			t.Errorf("cloud user %d: flag %v", i, got.ForceChangePasswordNextSignIn)
		}
	}

	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	byUPN := map[string]campaign.ReportRow{}
	for _, r := range rep.Users {
		byUPN[r.UPN] = r
		if r.Outcome != campaign.StatusDone {
			t.Errorf("%s: outcome %s: %+v", r.UPN, r.Outcome, r.Steps)
		}
	}
	if r := byUPN[strings.ToLower(changed.UPN)].Steps[campaign.StepADMustChange]; r == nil || !r.Verified || !strings.Contains(r.Detail, "password changed after") {
		t.Errorf("AD user who changed the password: %+v", r)
	}
	if r := byUPN[strings.ToLower(cloud[0].UserPrincipalName)].Steps[campaign.StepCloudMustChange]; r == nil || !r.Verified || !strings.Contains(r.Detail, "after the unanswered write") {
		t.Errorf("cloud user who changed the password: %+v", r)
	}
	if r := byUPN[strings.ToLower(dropped.UPN)].Steps[campaign.StepADMustChange]; r == nil || r.Verified || r.Attempts != 2 {
		t.Errorf("AD write that never left: %+v (want written again: attempts 2)", r)
	}
}
