package campaign_test

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/testrig/adminapitest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var ae *adminapi.APIError
	switch {
	case status == 0 && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case status != 0 && (!errors.As(err, &ae) || ae.Status != status):
		t.Fatalf("error %v, want status %d", err, status)
	}
}

// The routes through the real admin server: roles, the creator who cannot
// approve, an injected filter, and the report in both formats.
func TestAPIRolesApprovalAndReport(t *testing.T) {
	w := newWorld(t, false, graphsim.Options{})
	w.svcWith(func(d *campaign.Deps) { d.Limits.ApprovalThreshold = 0 })
	w.putCloudUsers("", "api", 3)
	tokAlice, alice := adminapitest.NewToken(t, "alice", adminapi.RoleOperator)
	tokBob, bob := adminapitest.NewToken(t, "bob", adminapi.RoleApprover)
	tokCarol, carol := adminapitest.NewToken(t, "carol", adminapi.RoleViewer)
	tokDave, dave := adminapitest.NewToken(t, "dave", adminapi.RoleOperator, adminapi.RoleApprover)
	env := adminapitest.Start(t, w.conn, func(s *adminapi.Server) { campaign.Register(s, w.svc) }, alice, bob, carol, dave)
	as := func(tok string) *adminapi.Client { return env.Client(t, tok) }
	ctx := ctxT(t)
	const base = "/api/v1/campaigns"
	spec := campaign.Spec{Name: "api", Include: campaign.Selector{UPNs: []string{"api00000" + tenantSuffix, "api00001" + tenantSuffix}},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}}

	var c campaign.Campaign
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodPost, base, spec, &c), http.StatusForbidden)
	bad := spec
	bad.Include = campaign.Selector{LDAPFilter: "(cn=x)(|(objectClass=*))"}
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, base, bad, &c), http.StatusUnprocessableEntity)
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, base, spec, &c), 0)
	id := base + "/" + c.ID
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodPost, id+"/preview", struct{}{}, &c), http.StatusForbidden)
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, id+"/preview", struct{}{}, &c), 0)
	var pv campaign.PreviewView
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodGet, id+"/preview", nil, &pv), 0)
	if pv.Campaign.Preview == nil || pv.Campaign.Preview.Total != 2 || !pv.Campaign.NeedsApproval {
		t.Fatalf("preview %+v", pv.Campaign.Preview)
	}
	// The API names what the campaign writes per user (two unsynced cloud
	// users selected by UPN: cloud writes), not a user kind.
	var raw struct {
		Campaign struct {
			Preview map[string]json.RawMessage `json:"preview"`
		} `json:"campaign"`
	}
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodGet, id+"/preview", nil, &raw), 0)
	var byWrite map[string]int
	if err := json.Unmarshal(raw.Campaign.Preview["by_write"], &byWrite); err != nil || len(byWrite) != 1 || byWrite["cloud_write"] != 2 {
		t.Fatalf("preview by_write = %s (%v), want {\"cloud_write\": 2}", raw.Campaign.Preview["by_write"], err)
	}
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, id+"/start", struct{}{}, &c), http.StatusConflict)    // not approved
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodPost, id+"/approve", struct{}{}, &c), http.StatusForbidden) // viewer
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, id+"/approve", struct{}{}, &c), http.StatusForbidden) // operator, and creator

	// An approver cannot approve what they created.
	var own campaign.Campaign
	wantStatus(t, as(tokDave).Do(ctx, http.MethodPost, base, spec, &own), 0)
	wantStatus(t, as(tokDave).Do(ctx, http.MethodPost, base+"/"+own.ID+"/preview", struct{}{}, &own), 0)
	wantStatus(t, as(tokDave).Do(ctx, http.MethodPost, base+"/"+own.ID+"/approve", struct{}{}, &own), http.StatusForbidden)
	wantStatus(t, as(tokDave).Do(ctx, http.MethodPost, base+"/"+own.ID+"/cancel", struct{}{}, &own), 0)

	wantStatus(t, as(tokBob).Do(ctx, http.MethodPost, id+"/approve", struct{}{}, &c), 0)
	if c.ApprovedBy != "bob" {
		t.Fatalf("approved by %q", c.ApprovedBy)
	}
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, id+"/start", struct{}{}, &c), 0)
	w.runInProcess(c.ID, campaign.NewPacer(100, time.Second, 1), time.Minute)

	var st campaign.Status
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodGet, id, nil, &st), 0)
	if st.Campaign.State != campaign.StateDone || st.Stats.Done != 2 {
		t.Fatalf("status %+v", st)
	}
	resp, err := as(tokCarol).Raw(ctx, http.MethodGet, id+"/report?format=csv", nil)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(resp.Body).ReadAll()
	resp.Body.Close()
	// two users, three steps each: must_change, its read-back (verify on, as in production), revoke
	if err != nil || len(rows) != 1+2*3 || rows[1][5] != campaign.StatusDone {
		t.Fatalf("CSV report: %v %v", rows, err)
	}
	var rep campaign.Report
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodGet, id+"/report", nil, &rep), 0)
	if len(rep.Users) != 2 || rep.Users[0].Steps[campaign.StepRevoke].HTTP != http.StatusOK {
		t.Fatalf("JSON report: %+v", rep.Users)
	}
	wantStatus(t, as(tokAlice).Do(ctx, http.MethodPost, id+"/pause", struct{}{}, &c), http.StatusConflict) // done
	wantStatus(t, as(tokCarol).Do(ctx, http.MethodGet, base+"/nope", nil, &st), http.StatusNotFound)
	_ = io.Discard
}
