package campaign_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// killAfter kills a DC once n writes have been answered.
type killAfter struct {
	campaign.ADWriter
	n    int64
	done atomic.Int64
	kill func()
}

func (k *killAfter) ForceChange(ctx context.Context, dn string) (string, error) {
	ans, err := k.ADWriter.ForceChange(ctx, dn)
	if err == nil && k.done.Add(1) == k.n {
		k.kill()
	}
	return ans, err
}

// TestADLaneFailsOverToTheNextDC (issue 16): a campaign's AD lane writes
// to the domain's DCs in order, the second DC first; it is killed
// (SIGKILL) after a third of the writes. The lane goes on through the
// first DC: every user must change, none failed. By the domain's own
// record (pwdLastSet's replication version, read on the first DC once the
// second is back and has replicated), the users written after the kill
// were written exactly once; those whose write the dead DC had answered
// but not yet replicated may have been written again by the read-back,
// which cannot see an unreplicated write (at most twice, and counted).
func TestADLaneFailsOverToTheNextDC(t *testing.T) {
	const n, killAt = 60, 20
	w := newWorld(t, true, graphsim.Options{})
	dc2 := adtest.RequireSecond(t)
	w.scope.IncludeDisabled = true // adtest's fast users are disabled
	users := w.adUsers(n)
	last := users[n-1].DN
	dc2.WaitReplicated(t, last, "pwdLastSet", w.dc.Read(t, last, "pwdLastSet").GetAttributeValue("pwdLastSet"))
	before := w.dc.AttrVersions(t, w.ou, adtest.AttidPwdLastSet)

	two, err := campaign.NewLDAP(campaign.LDAPConfig{URLs: []string{dc2.LDAPSURL, w.dc.LDAPSURL}, CAFile: w.dc.CAFile,
		BindDN: w.dc.BindUPN, BindPassword: w.dc.BindPassword, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(two.Close)
	ad := &killAfter{ADWriter: two, n: killAt, kill: func() { dc2.Kill(t) }}
	w.runCfg = func(c *campaign.RunConfig) { c.StatsEvery = 100 * time.Millisecond }
	c := w.startCampaign(campaign.Spec{Name: "dc failover", Include: campaign.Selector{OUs: []string{w.ou}},
		Actions: campaign.Actions{RequireChange: true}})
	w.runInProcessWith(c.ID, w.client, ad, campaign.NewPacer(1000, time.Second, 1), 2*time.Minute)

	st, err := w.svc.Status(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Campaign.State != campaign.StateDone || st.Stats.Done != n || st.Stats.Failed != 0 {
		t.Fatalf("after the failover: state %s, stats %+v; want done, %d done, 0 failed", st.Campaign.State, st.Stats, n)
	}
	if ad.done.Load() < killAt {
		t.Fatalf("only %d writes answered: the DC was never killed", ad.done.Load())
	}
	// The second DC back, the first has every write.
	dc2.Start(t)
	for _, u := range users {
		w.dc.WaitReplicated(t, u.DN, "pwdLastSet", "0")
	}
	after := w.dc.AttrVersions(t, w.ou, adtest.AttidPwdLastSet)
	twice := 0
	for _, u := range users {
		dn := strings.ToLower(u.DN)
		switch d := after[dn] - before[dn]; {
		case d == 2:
			twice++
		case d != 1:
			t.Errorf("%s: pwdLastSet written %d times, want 1 (2 only for a write the dead DC had not replicated)", u.DN, d)
		}
	}
	if twice > killAt {
		t.Errorf("%d users written twice, more than the %d written on the killed DC", twice, killAt)
	}
	t.Logf("%d users, DC2 killed after %d answered writes: all done through DC1; %d written again (answered by DC2, not yet replicated)", n, killAt, twice)
}
