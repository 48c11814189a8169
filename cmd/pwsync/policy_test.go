package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// policyCheckBase is a config the evaluator accepts; tests append to it.
const policyCheckBase = `
ad:
  domains:
    - name: example.test
      url: ldaps://127.0.0.1:636
      bind_dn: CN=svc,DC=example,DC=test
      bind_password: env:PWSYNC_TEST_AD_PASSWORD
      base_dn: DC=example,DC=test
graph: {tenant_id: t, client_id: c, client_secret: env:PWSYNC_TEST_GRAPH_SECRET}
evaluator:
  scope:
    include_ous: ["OU=Corp,DC=example,DC=test"]
    include_groups: ["CN=Pilot,OU=Groups,DC=example,DC=test"]
    break_glass_upns: [bg@example.test]
    break_glass_groups: ["CN=Break-Glass,OU=Groups,DC=example,DC=test"]
  expiry: {enabled: true, lead_days: [14, 7, 3, 1, 0], max_late: 36h}
`

// TestPolicyCheckCLI: `pwsync policy check FILE` prints the rules in force
// for a good file, warns about notices nobody would send, and names the key
// of a bad one.
func TestPolicyCheckCLI(t *testing.T) {
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", "p")
	t.Setenv("PWSYNC_TEST_GRAPH_SECRET", "s")
	tests := []struct {
		name, yaml string
		wantErr    string
		want       []string
	}{
		{"good", policyCheckBase + "notify: {enabled: true, senders: [noreply@example.test]}\n", "", []string{
			": ok",
			"  include OU: OU=Corp,DC=example,DC=test",
			"  include AD group (nested): CN=Pilot,OU=Groups,DC=example,DC=test",
			"  exclude break-glass UPN (always): bg@example.test",
			"  exclude break-glass group (nested, always): CN=Break-Glass,OU=Groups,DC=example,DC=test",
			"  expiry: on; notices on at 14d before, 7d before, 3d before, 1d before, expiry; enforcement at expiry on; stale notices skipped after 36h0m0s",
		}},
		{"notices_without_notifier", policyCheckBase, "", []string{
			"warning: evaluator.expiry.notify is on but notify.enabled is off",
			": ok",
		}},
		{"unknown_key", strings.Replace(policyCheckBase, "max_late: 36h", "max_late: 36h, lead_dayz: [2]", 1),
			"evaluator.expiry.lead_dayz: unknown key", nil},
		{"bad_lead_day", strings.Replace(policyCheckBase, "[14, 7, 3, 1, 0]", "[14, 7, 7]", 1),
			"evaluator.expiry.lead_days[2]: duplicate lead day 7", nil},
		{"bad_entra_group", strings.Replace(policyCheckBase, "    break_glass_upns:", "    include_entra_groups: [Pilot]\n    break_glass_upns:", 1),
			"evaluator.scope.include_entra_groups[0]: must be an Entra group object ID", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pwsync.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := dispatch(context.Background(), []string{"policy", "check", path}, &out, &out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("policy check: err = %v, want it to name %q\n%s", err, tt.wantErr, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("policy check: %v\n%s", err, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if tt.name == "good" && strings.Contains(out.String(), "warning:") {
				t.Errorf("a good file warned:\n%s", out.String())
			}
		})
	}
}

// TestPolicyReportCLI: `pwsync policy report` against the real DC (domain
// policy and a PSO of this test), the simulator (a domain whose validity
// was never set, i.e. Graph's 90 days; the sync features) and pwsync's
// users bucket: with cloud state, without it, and with no NATS at all.
func TestPolicyReportCLI(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	group := dc.CreateGroup(t, ou, "report-pso")
	pso := dc.CreatePSO(t, "pso-report", 3, 20*24*time.Hour, group)
	psoName := strings.TrimPrefix(strings.SplitN(pso, ",", 2)[0], "CN=")

	roles := append(slices.Clone(graphsim.DefaultRoles), "Domain.Read.All", "OnPremDirectorySynchronization.Read.All")
	roles = append(roles, graphsim.RiskPolicyRoles...) // else the risk setting's fact line says "unknown"
	dir := t.TempDir()
	sim := runSim(t, graphsim.Options{ClientSecret: simSecret, Roles: roles}, filepath.Join(dir, "graph-ca.pem"))
	realm := strings.ToLower(dc.Realm)
	sim.PutDomain(graphsim.Domain{ID: realm, IsVerified: true, ValidityUnset: true, WindowUnset: true})
	if err := sim.SetSyncFeature("cloudPasswordPolicyForPasswordSyncedUsersEnabled", true); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", dc.BindPassword)
	t.Setenv("PWSYNC_TEST_GRAPH_SECRET", simSecret)
	emb, conn := natstest.Run(t)
	writeCfg := func(name, nats string) string {
		path := filepath.Join(dir, name)
		cfg := nats + adGraphYAML(realm, dc, sim, filepath.Join(dir, "graph-ca.pem")) + fmt.Sprintf(`
evaluator:
  scope: {include_ous: ["%s"]}
  forced_change: {include_never_expires: false}
  expiry: {enabled: true, notify: false}
`, ou)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// what the evaluator stored for two users of this OU: a synced user
	// still stamped DisablePasswordExpiration, and a "never expires" account
	put := func(withCloud bool) {
		users, err := conn.JS.KeyValue(context.Background(), natsx.BucketUsers)
		if err != nil {
			t.Fatal(err)
		}
		for i, st := range []rules.State{
			{Seen: true, InScope: true, AD: events.ADUser{Domain: realm, ObjectGUID: "g-ann", UPN: "ann@" + realm, DN: "CN=ann," + ou,
				PwdLastSet: events.ToFileTime(time.Now().Add(-24 * time.Hour)), UserAccountControl: 512},
				Cloud: &events.CloudUser{ID: "c-ann", UPN: "ann@" + realm, SyncEnabled: true, PasswordPolicies: "DisablePasswordExpiration"}},
			{Seen: true, InScope: true, AD: events.ADUser{Domain: realm, ObjectGUID: "g-svc", UPN: "svc@" + realm, DN: "CN=svc," + ou,
				PwdLastSet: events.ToFileTime(time.Now().Add(-24 * time.Hour)), UserAccountControl: 512 | events.UACDontExpirePassword}},
		} {
			if !withCloud {
				st.Cloud = nil
			}
			data, _ := json.Marshal(st)
			if _, err := users.Put(context.Background(), fmt.Sprintf("g-%d", i), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	facts := []string{
		"AD " + realm + ": maxPwdAge 42 days\n",
		"  PSO " + psoName + ": precedence 3, maximum age 20 days, applies to [" + group + "]\n",
		"Entra domain " + realm + " (Managed, verified true): passwordValidityPeriodInDays unset (90), passwordNotificationWindowInDays unset (14)\n",
		"Entra sync features: cloudPasswordPolicyForPasswordSyncedUsersEnabled=true, userForcePasswordChangeOnLogonEnabled=false, passwordWritebackEnabled=false\n",
		"[WARN] domain " + realm + ": cloud validity 90 days differs from AD " + realm + "'s maxPwdAge 42 days\n",
		"[INFO] UserForcePasswordChangeOnLogonEnabled is off\n",
		"[INFO] PSO " + psoName + " (precedence 3) sets a maximum age of 20 days\n",
	}
	for _, c := range []struct {
		name    string
		nats    string
		cloud   bool
		want    []string
		notWant []string
	}{
		{"with_cloud_state", "nats: {url: \"" + emb.ClientURL() + "\"}", true, []string{
			"  Entra domains (matched by its users' UPN suffixes): " + realm + "\n",
			"[WARN] 1 synced user(s) still stamped DisablePasswordExpiration although their AD password expires (e.g. [ann@" + realm + "])\n",
			// AD does not require such an account to change (MS-ADA3): information, never a fix to opt in
			"[INFO] 1 in-scope AD user(s) have \"password never expires\"\n",
		}, []string{"unknown", "include_never_expires: true"}},
		{"without_cloud_state", "nats: {url: \"" + emb.ClientURL() + "\"}", false, []string{
			"[INFO] whether synced users are still stamped DisablePasswordExpiration is unknown: pwsync has no cloud state",
			"[INFO] 1 in-scope AD user(s) have \"password never expires\"\n",
		}, []string{"still stamped DisablePasswordExpiration although"}},
		{"no_nats", "", false, []string{
			"(users not read from pwsync's state: ",
			"  Entra domains (matched by the AD domain's name, no users read): " + realm + "\n",
			"[INFO] whether synced users are still stamped DisablePasswordExpiration is unknown: pwsync's users bucket was not read",
		}, []string{"in-scope AD user(s)", "include_never_expires"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			put(c.cloud)
			out := runPolicyReport(t, writeCfg(c.name+".yaml", c.nats))
			for _, w := range append(slices.Clone(facts), c.want...) {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out, w) {
					t.Errorf("report has %q:\n%s", w, out)
				}
			}
		})
	}
}

// runPolicyReport runs `pwsync policy report` on the config at path and
// returns what it printed.
func runPolicyReport(t *testing.T, path string) string {
	t.Helper()
	var out bytes.Buffer
	if err := dispatch(context.Background(), []string{"policy", "report", "--config", path}, &out, &out); err != nil {
		t.Fatalf("policy report: %v\n%s", err, out.String())
	}
	return out.String()
}
