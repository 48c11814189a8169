package campaign_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/cutproxy"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// cutAfter cuts the proxy once n writes have been answered.
type cutAfter struct {
	campaign.ADWriter
	n     int64
	done  atomic.Int64
	proxy *cutproxy.Proxy
	cut   chan struct{}
}

func (c *cutAfter) ForceChange(ctx context.Context, dn string) (string, error) {
	ans, err := c.ADWriter.ForceChange(ctx, dn)
	if err == nil && c.done.Add(1) == c.n {
		c.proxy.Cut()
		close(c.cut)
	}
	return ans, err
}

// TestDCOutageMidCampaign: the DC goes away in the middle of a campaign's
// AD writes (every connection dropped, new ones refused) for many times one
// user's whole retry budget, and comes back. The campaign waits instead of
// failing users, its status says the DC is unreachable, and it ends with
// every user written exactly once by the DC's own record
// (replPropertyMetaData). Writes cut off in flight are read back first.
func TestDCOutageMidCampaign(t *testing.T) {
	const n, cutAt, outage = 150, 50, 4 * time.Second
	w := newWorld(t, true, graphsim.Options{})
	w.scope.IncludeDisabled = true // adtest's fast users are disabled
	users := w.adUsers(n)
	before := w.dc.AttrVersions(t, w.ou, adtest.AttidPwdLastSet)

	proxy := cutproxy.Start(t, strings.TrimPrefix(w.dc.LDAPSURL, "ldaps://"))
	viaProxy, err := campaign.NewLDAP(campaign.LDAPConfig{URL: "ldaps://" + proxy.Addr(), CAFile: w.dc.CAFile,
		BindDN: w.dc.BindUPN, BindPassword: w.dc.BindPassword, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaProxy.Close)
	ad := &cutAfter{ADWriter: viaProxy, n: cutAt, proxy: proxy, cut: make(chan struct{})}
	// Without the wait, 3 attempts 50-200ms apart fail a user in well under
	// a second of outage.
	w.runCfg = func(c *campaign.RunConfig) {
		c.MaxAttempts, c.RetryMax, c.StatsEvery = 3, 200*time.Millisecond, 100*time.Millisecond
		c.ADOutageAlert = time.Second
	}

	c := w.startCampaign(campaign.Spec{Name: "dc outage", Include: campaign.Selector{OUs: []string{w.ou}},
		Actions: campaign.Actions{RequireChange: true}})

	seen := make(chan campaign.Stats, 1)
	go func() {
		defer proxy.Restore()
		select {
		case <-ad.cut:
		case <-time.After(time.Minute):
			return
		}
		time.Sleep(outage)
		st, err := w.svc.Status(context.Background(), c.ID)
		if err != nil {
			t.Errorf("status during the outage: %v", err)
		}
		if g := testutil.ToFloat64(metrics.CampaignADUnreachable.WithLabelValues(c.ID)); g != 1 {
			t.Errorf("pwsync_campaign_ad_unreachable during the outage = %v, want 1", g)
		}
		seen <- st.Stats
	}()
	w.runInProcessWith(c.ID, w.client, ad, campaign.NewPacer(1000, time.Second, 1), 2*time.Minute)

	var during campaign.Stats
	select {
	case during = <-seen: // the run may have ended first: then the outage failed users
	case <-time.After(outage + 10*time.Second):
		t.Fatal("no status from during the outage: the DC was never cut")
	}
	if during.ADUnreachable.IsZero() || during.Failed != 0 || during.Done >= n {
		t.Errorf("status %s into the outage: unreachable since %v, %d done, %d failed; want the outage shown, 0 failed, not done",
			outage, during.ADUnreachable, during.Done, during.Failed)
	}
	st, err := w.svc.Status(ctxT(t), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Campaign.State != campaign.StateDone || st.Stats.Done != n || st.Stats.Failed != 0 || !st.Stats.ADUnreachable.IsZero() {
		t.Fatalf("after the outage: state %s, stats %+v; want done, %d done, 0 failed, reachable", st.Campaign.State, st.Stats, n)
	}
	if n := testutil.CollectAndCount(metrics.CampaignADUnreachable); n != 0 {
		t.Errorf("pwsync_campaign_ad_unreachable: %d series after the run, want none", n)
	}
	after := w.dc.AttrVersions(t, w.ou, adtest.AttidPwdLastSet)
	for _, u := range users {
		dn := strings.ToLower(u.DN)
		if d := after[dn] - before[dn]; d != 1 {
			t.Errorf("%s: pwdLastSet written %d times, want exactly 1", u.DN, d)
		}
	}
	// The admins heard of the outage once, and of its end.
	var alerts []string
	for _, a := range w.alerts() {
		if a.Campaign == c.ID {
			alerts = append(alerts, a.Reason)
		}
	}
	// (A DC slow enough under the suite's load to time a bind out makes a
	// short outage of its own: then more pairs, still in turn.)
	ok := len(alerts) >= 2 && len(alerts)%2 == 0
	for i := 0; ok && i < len(alerts); i += 2 {
		ok = strings.Contains(alerts[i], `campaign "dc outage": the DC of example.test has been unreachable since`) &&
			strings.Contains(alerts[i+1], `campaign "dc outage": the DC of example.test answers again after`)
	}
	if !ok {
		t.Errorf("alerts: %q; want one for the outage, then one for its end", alerts)
	}
	t.Logf("%d users: cut after %d answered writes for %s; %d read back, %d retries; all done, each written once",
		n, cutAt, outage, st.Stats.Verified, st.Stats.Retries)
}
