package campaign_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// gatedAD holds the write of one DN until released, and counts the writes
// that reached the DC.
type gatedAD struct {
	inner   campaign.ADWriter
	gate    string
	reached chan struct{}
	release chan struct{}
	mu      sync.Mutex
	calls   map[string]int
}

func (g *gatedAD) ForceChange(ctx context.Context, dn string) (string, error) {
	if dn == g.gate {
		close(g.reached)
		<-g.release
	}
	g.mu.Lock()
	g.calls[dn]++
	g.mu.Unlock()
	return g.inner.ForceChange(ctx, dn)
}

func (g *gatedAD) PwdLastSet(ctx context.Context, dn string) (int64, error) {
	return g.inner.PwdLastSet(ctx, dn)
}

// TestBreakGlassAfterPreview: accounts that become break-glass after the
// preview are never written: one AD user put in a (nested) break-glass
// group and one cloud UPN added to the list between preview and start
// (counted in the start's log entry), and one AD user put in the group
// while the run is writing (the runner reads the groups again). Each is in
// the report as excluded, with the reason; the others are written.
func TestBreakGlassAfterPreview(t *testing.T) {
	w := newWorld(t, true, graphsim.Options{})
	w.scope.IncludeDisabled = true // adtest's fast users are disabled
	ad := w.adUsers(3)
	const gid = "eeeeeeee-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "Ops")
	cloud := w.putCloudUsers(gid, "bg", 3)
	bgOuter := w.dc.CreateGroup(t, w.ou, "bgout")
	bgInner := w.dc.CreateGroup(t, w.ou, "bgin")
	w.dc.AddMember(t, bgOuter, bgInner)
	w.scope.BreakGlassGroups = []string{bgOuter}

	c, err := w.svc.Create(ctxT(t), campaign.Spec{Name: "late break-glass", Include: campaign.Selector{OUs: []string{w.ou}, EntraGroups: []string{gid}},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true, Notify: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c, err = w.svc.Preview(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if c.Preview.Total != 6 || len(c.Preview.Excluded) != 0 {
		t.Fatalf("preview: %+v", c.Preview)
	}
	// Between preview and start.
	w.dc.AddMember(t, bgInner, ad[0].DN)
	w.scope.BreakGlassUPNs = []string{strings.ToUpper(cloud[0].UserPrincipalName)}
	if c, err = w.svc.Start(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if note := c.Log[len(c.Log)-1].Note; !strings.Contains(note, "2 users became break-glass") {
		t.Fatalf("start's log entry: %q", note)
	}

	// During the run: ad[1]'s write is held while ad[2] joins the group,
	// until the runner has read the groups again (every 100ms here).
	gated := &gatedAD{inner: w.ldap, gate: ad[1].DN, reached: make(chan struct{}), release: make(chan struct{}), calls: map[string]int{}}
	w.runCfg = func(c *campaign.RunConfig) { c.ADConcurrency = 1 } // AD users in order
	go func() {
		<-gated.reached
		w.dc.AddMember(t, bgInner, ad[2].DN)
		// Held until the runner has read the groups since (not a fixed
		// sleep: a loaded DC makes the read slow).
		added := time.Now()
		for deadline := added.Add(30 * time.Second); !w.readBreakGlassSince(added) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the runner stores what it read
		close(gated.release)
	}()
	w.runInProcessWith(c.ID, w.client, gated, campaign.NewPacer(100, time.Second, 1), time.Minute)

	for i, want := range []int{0, 1, 0} {
		if gated.calls[ad[i].DN] != want {
			t.Errorf("AD user %d: %d writes, want %d", i, gated.calls[ad[i].DN], want)
		}
		if v := w.pwdLastSet(ad[i].DN); (v == 0) != (want == 1) {
			t.Errorf("AD user %d: pwdLastSet=%d", i, v)
		}
	}
	a := w.applied()
	for i, u := range cloud {
		want := 1
		if i == 0 {
			want = 0
		}
		if a.flag[u.ID] != want || a.revoke[u.ID] != want {
			t.Errorf("cloud user %d: %d must-changes, %d revokes applied, want %d", i, a.flag[u.ID], a.revoke[u.ID], want)
		}
	}
	if n := w.notices(c.ID); len(n) != 2 || n[cloud[0].ID] != 0 {
		t.Errorf("notices: %v", n)
	}

	rep, err := w.svc.Report(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Campaign.State != campaign.StateDone || rep.Stats.Done != 3 || rep.Stats.Excluded != 3 || rep.Stats.Remaining != 0 {
		t.Fatalf("state %s, stats %+v", rep.Campaign.State, rep.Stats)
	}
	wantReason := map[string]string{strings.ToLower(ad[0].UPN): campaign.ReasonBreakGlassGroup, strings.ToLower(ad[2].UPN): campaign.ReasonBreakGlassGroup,
		strings.ToLower(cloud[0].UserPrincipalName): campaign.ReasonBreakGlassUPN}
	for _, u := range rep.Users {
		reason, excluded := wantReason[u.UPN]
		if !excluded {
			if u.Outcome != campaign.StatusDone {
				t.Errorf("%s: outcome %s", u.UPN, u.Outcome)
			}
			continue
		}
		if u.Outcome != campaign.StatusExcluded {
			t.Errorf("%s: outcome %s, want excluded", u.UPN, u.Outcome)
		}
		for step, r := range u.Steps {
			if r == nil || r.Status != campaign.StatusExcluded || !strings.Contains(r.Detail, reason) {
				t.Errorf("%s %s: %+v, want excluded: %s", u.UPN, step, r, reason)
			}
		}
	}
}
