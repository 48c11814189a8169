// pwsync doctor's risk check: Identity Protection answers (Entra ID P2, permissions).

package main

import (
	"context"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

// riskRoles are the application roles risk.enabled needs (least privileged
// first): read risky users and detections; dismissal needs ReadWrite.
func riskRoles(dismiss bool) []roleNeed {
	users := []string{"IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All"}
	if dismiss {
		users = []string{"IdentityRiskyUser.ReadWrite.All"}
	}
	return []roleNeed{
		{Feature: "risky users (risk.enabled)", Roles: users},
		{Feature: "risk detections (risk.enabled)", Roles: []string{"IdentityRiskEvent.Read.All", "IdentityRiskEvent.ReadWrite.All"}},
	}
}

// checkRisk reads the risky users of the last minute: Graph answers 403
// to a tenant without Entra ID P2 (and to an app without the permission,
// which the role lines tell apart).
func (d *doctor) checkRisk(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	const name = "graph identity protection"
	client, err := newGraphClient(d.cfg.Graph)
	if err != nil {
		d.add(checkResult{statusFail, name, err.Error(), "fix graph: first"})
		return
	}
	defer client.Close()
	_, err = client.RiskyUsersSince(ctx, time.Now().Add(-time.Minute))
	switch {
	case err == nil:
		// One line on the setting that decides whether an AD change clears the risk (details: pwsync policy report).
		d.add(checkResult{Status: statusPass, Name: name, Detail: "riskyUsers readable (Entra ID P2); on-premises password change resets user risk: " +
			readRiskReset(ctx, client).String()})
	case graph.IsUnlicensed(err):
		d.add(checkResult{statusFail, name, "403 from /identityProtection/riskyUsers: " + err.Error(),
			"the tenant needs Entra ID P2 (Identity Protection), and the app IdentityRiskyUser.Read.All and IdentityRiskEvent.Read.All with admin consent; or set risk.enabled: false"})
	default:
		d.add(checkResult{statusFail, name, err.Error(), "check graph.base_url and the network path to Graph"})
	}
}
