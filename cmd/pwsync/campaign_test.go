package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/testrig/adminapitest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

func TestProgressLine(t *testing.T) {
	down := time.Date(2026, 12, 3, 9, 30, 5, 0, time.UTC)
	tests := []struct {
		st   campaign.Stats
		want string
	}{
		{campaign.Stats{Total: 100, Done: 40, Failed: 5, Remaining: 55, Rate: 11},
			"[#############.................]  45.0% done 40 failed 5 remaining 55 | 11.0 users/s | ETA 5s | running"},
		{campaign.Stats{Total: 0}, "[..............................]   0.0% done 0 failed 0 remaining 0 | 0.0 users/s | ETA - | running"},
		{campaign.Stats{Total: 3, Done: 3}, "[##############################] 100.0% done 3 failed 0 remaining 0 | 0.0 users/s | ETA - | running"},
		{campaign.Stats{Total: 3, Done: 3, Confirmed: 1, ConfirmFailed: 2}, "[##############################] 100.0% done 3 failed 0 remaining 0 | 0.0 users/s | ETA - | running" +
			" | marked compromised 1, failed 2"},
		{campaign.Stats{Total: 3, Done: 1, Remaining: 2, ADUnreachable: down}, "[##########....................]  33.3% done 1 failed 0 remaining 2 | 0.0 users/s | ETA - | running" +
			" | DC unreachable since " + down.Local().Format(time.TimeOnly) + ", AD writes waiting"},
	}
	for _, tc := range tests {
		got := progressLine(campaign.Status{Campaign: campaign.Campaign{State: campaign.StateRunning}, Stats: tc.st}, 30)
		if got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// The CLI over the real admin API: create from a CSV, preview, approve by a
// second person, status, report.
func TestCampaignCLI(t *testing.T) {
	_, conn := natstest.Run(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	sim := runSim(t, graphsim.Options{ClientSecret: "s"}, ca)
	client, err := msgraph.New(msgraph.Config{TenantID: sim.TenantID(), ClientID: sim.ClientID(), ClientSecret: "s",
		AuthorityHost: sim.AuthorityHost(), GraphBaseURL: sim.GraphBaseURL(), CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	for _, u := range []string{"a@contoso.example", "b@contoso.example"} {
		sim.PutUser(graphsim.User{UserPrincipalName: u, AccountEnabled: true})
	}
	cfg := config.Default()
	cfg.Campaigns.ApprovalThreshold = 0
	svc, _, closeAD, err := campaignParts(context.Background(), cfg, conn, client, nil, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAD()
	tokOp, op := adminapitest.NewToken(t, "olga", adminapi.RoleOperator)
	tokAp, ap := adminapitest.NewToken(t, "pete", adminapi.RoleApprover)
	env := adminapitest.Start(t, conn, func(s *adminapi.Server) { campaign.Register(s, svc) }, op, ap)
	csvFile := filepath.Join(t.TempDir(), "upns.csv")
	if err := os.WriteFile(csvFile, []byte("\xef\xbb\xbfName;UPN\nA;A@contoso.example\nB;b@contoso.example\nX;nobody@contoso.example\nbad;x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(tok string, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append([]string{"campaign", args[0], "--admin-url", env.URL, "--token", tok, "--ca-file", env.CAFile}, args[1:]...)
		if err := dispatch(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String() + errOut.String()
	}
	out := run(tokOp, "create", "--name", "cli", "--csv", csvFile, "--revoke")
	id := strings.Fields(strings.TrimPrefix(out, "created "))[0]
	if !strings.Contains(out, `skipped "x"`) {
		t.Fatalf("create did not report the bad CSV line: %s", out)
	}
	out = run(tokOp, "preview", id)
	for _, want := range []string{"2 users (AD write 0, cloud write 2)", "cloud_write", "revoke             2", "matched nobody (1):", "nobody@contoso.example", "approve " + id} {
		if !strings.Contains(out, want) {
			t.Fatalf("preview lacks %q:\n%s", want, out)
		}
	}
	if out = run(tokAp, "approve", id); !strings.Contains(out, "approved") {
		t.Fatalf("approve: %s", out)
	}
	if out = run(tokOp, "status", id); !strings.Contains(out, "remaining 2") || !strings.Contains(out, "approved") {
		t.Fatalf("status: %s", out)
	}
	if out = run(tokOp, "report", id, "--format", "json"); !strings.Contains(out, `"users"`) {
		t.Fatalf("report: %s", out)
	}
	// --confirm-compromised is the spec's confirm_compromised, and the preview says it is on.
	out = run(tokOp, "create", "--name", "cli-mark", "--upn", "a@contoso.example", "--revoke", "--confirm-compromised")
	id = strings.Fields(strings.TrimPrefix(out, "created "))[0]
	out = run(tokOp, "preview", id)
	for _, want := range []string{"confirm_compromised 1", "confirm_compromised is on", "IdentityRiskyUser.ReadWrite.All", "0 without a known cloud account"} {
		if !strings.Contains(out, want) {
			t.Fatalf("preview lacks %q:\n%s", want, out)
		}
	}
}
