package adwrite

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
)

// stillAtRisk reports whether a risky user's state means the risk is not
// remediated: Entra's own remediation and a dismissal both leave the user
// remediated, dismissed or none.
func stillAtRisk(u *events.RiskyUser) bool {
	return u != nil && !u.IsDeleted && (u.State == "atRisk" || u.State == "confirmedCompromised")
}

// checkRisk carries out a check_risk action: at its NotBefore it reads the
// user's risk and, if it is still at risk, alerts the admins. Before then
// the message waits (a delayed NAK for the time left). It returns the
// step's detail for the audit.
func (s *Service) checkRisk(ctx context.Context, a events.Action) (string, error) {
	if left := a.NotBefore.Sub(s.now()); left > 0 {
		return "", &natsx.RetryLater{After: left, Err: errNotYet}
	}
	if s.risk == nil || a.User.CloudID == "" {
		return "", natsx.Permanent(errors.New("check_risk needs Graph and the user's cloud ID"))
	}
	u, err := s.risk.RiskyUser(ctx, a.User.CloudID)
	var ge *graph.Error
	switch {
	case errors.As(err, &ge) && ge.Status == http.StatusNotFound:
		return "no risk record: remediated", nil
	case graph.IsUnlicensed(err):
		return "", natsx.Permanent(fmt.Errorf("reading the risk of %s: %w (needs Entra ID P2 and IdentityRiskyUser.Read.All)", a.User.UPN, err))
	case errors.As(err, &ge) && !ge.Retryable():
		return "", natsx.Permanent(fmt.Errorf("reading the risk of %s: %w", a.User.UPN, err))
	case err != nil:
		return "", fmt.Errorf("reading the risk of %s: %w", a.User.UPN, err)
	}
	if !stillAtRisk(u) {
		return fmt.Sprintf("risk remediated (state %s, detail %s)", u.State, u.Detail), nil
	}
	since := ""
	if !a.EventTime.IsZero() {
		since = " " + s.now().Sub(a.EventTime).Round(time.Second).String()
	}
	reason := fmt.Sprintf("Identity Protection: %s is still at risk (state %s, level %s, detail %s)%s after changing the password in AD. "+
		"Entra did not remediate it: turn on \"Allow on-premises password change to reset user risk\" (needs password hash sync), "+
		"set risk.dismiss_after_change, or investigate and dismiss it in the Entra admin center.",
		a.User.UPN, u.State, u.Level, u.Detail, since)
	alert := events.Action{ID: a.ID + ".alert", Kind: events.ActionAlert, Rule: a.Rule, Reason: reason,
		EventID: a.EventID, EventTime: a.EventTime, User: a.User, Seq: a.Seq}
	// The alert's ID is the check's: a redelivered check alerts once.
	if _, err := s.pub.PublishJSON(ctx, alert.Subject(), alert.ID, alert); err != nil {
		return "", fmt.Errorf("alerting that %s is still at risk: %w", a.User.UPN, err)
	}
	zerolog.Ctx(ctx).Warn().Str("upn", a.User.UPN).Str("risk_state", u.State).Str("risk_detail", u.Detail).
		Msg("risk check: still at risk after the password change; admins alerted")
	return "still at risk: admins alerted", nil
}

// errNotYet: a check_risk delivered before its time.
var errNotYet = errors.New("not yet: the check waits for its time")
