package policy

import (
	"fmt"
	"io"

	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/shared/graph"
)

// RiskReset is the Identity Protection tenant setting "Allow on-premises
// password change to reset user risk" (Graph beta:
// identityProtection/policy isUserRiskClearedOnPasswordReset), as read.
type RiskReset struct {
	On bool
	// Unknown says why the setting could not be read; empty: it was.
	Unknown string
}

const riskResetName = `Identity Protection's "Allow on-premises password change to reset user risk"`

// riskResetWhere is where an admin sees and sets it.
const riskResetWhere = "Entra admin center > ID Protection > Dashboard > Settings"

// String is "on", "off" or "unknown: why".
func (r RiskReset) String() string {
	switch {
	case r.Unknown != "":
		return "unknown: " + r.Unknown
	case r.On:
		return "on"
	}
	return "off"
}

// printRiskResetFact writes the setting as read (nil: not asked).
func printRiskResetFact(w io.Writer, t Tenant) {
	if t.RiskReset == nil {
		return
	}
	fmt.Fprintf(w, "Entra ID Protection: Allow on-premises password change to reset user risk (isUserRiskClearedOnPasswordReset): %s\n", t.RiskReset)
}

// riskResetFindings: whether a user the risk loop made change the password
// in AD leaves the risk behind. Entra remediates on the synced change only
// with the setting on and password hash sync running; otherwise only
// risk.dismiss_after_change (pwsync dismissing) does.
func riskResetFindings(p rules.Policy, t Tenant) []Finding {
	if !p.Risk.Enabled || t.RiskReset == nil || t.Sync == nil {
		// no directory sync: the loop changes cloud passwords, which remediate on their own
		return nil
	}
	phs := t.Sync.Features[graph.FeaturePasswordSync]
	dismiss := p.Risk.DismissAfterChange
	const stays = "a user the risk loop makes change the password in AD stays at risk in Entra after the change (riskState atRisk), " +
		"so user-risk Conditional Access keeps blocking or prompting them until an admin dismisses the risk"
	const dismissFix = "set risk.dismiss_after_change: true so pwsync dismisses the risk once AD shows the new password (needs IdentityRiskyUser.ReadWrite.All)"
	r := *t.RiskReset
	switch {
	case r.Unknown != "" && !dismiss:
		return []Finding{{"info", "whether " + riskResetName + " is on is unknown: " + r.Unknown,
			"if it is off, " + stays + " (risk.dismiss_after_change is false)",
			"grant the app Policy.Read.IdentityProtection so this report can read it, or look in " + riskResetWhere + "; or " + dismissFix}}
	case r.Unknown != "":
		return nil // pwsync dismisses whatever the setting says
	case !r.On && !dismiss:
		return []Finding{{"warn", riskResetName + " is off and risk.dismiss_after_change is false", stays,
			"turn the setting on (" + riskResetWhere + "; it needs password hash sync), or " + dismissFix}}
	case r.On && !phs && !dismiss:
		return []Finding{{"warn", riskResetName + " is on but password hash sync is off",
			"the setting acts on the password changes password hash sync carries to Entra: without it " + stays,
			"enable password hash sync in Entra Connect, or " + dismissFix}}
	case r.On && phs && dismiss:
		return []Finding{{"info", riskResetName + " is on and risk.dismiss_after_change is true",
			"both remediate the user's risk after the AD change, Entra on the synced password and pwsync by dismissing it: harmless, " +
				"but whichever comes first sets the risk detail (userChangedPasswordOnPremises or adminDismissedAllRiskForUser)",
			"nothing needed; set risk.dismiss_after_change: false to leave the remediation to Entra"}}
	}
	return nil
}
