package notifier

// Notices: the ledger check, quiet hours, rendering, and the sends (Teams
// activity feed first, then email from the sender mailboxes).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

func (x *delivery) notify(ctx context.Context) error {
	s, a := x.s, x.a
	if a.Notice == nil {
		return x.deadLetter(ctx, errors.New("notify action without a notice"))
	}
	if !s.set.Enabled {
		return x.finish(ctx, events.OutcomeSkipped, "notify.enabled is false", nil)
	}
	n := *a.Notice
	key := n.LedgerKey(a.User)
	if e, _, err := s.ledger.get(ctx, key); err == nil && e.State == stateSent {
		return x.finish(ctx, events.OutcomeSkipped, "already sent ("+e.Channel+" at "+e.At.Format(time.RFC3339)+")", nil)
	} else if err != nil && !natsx.IsNotFound(err) {
		return err
	}

	now := s.now()
	if n.Template == events.NoticeExpiryWarning && !n.Expiry.IsZero() && !n.Expiry.After(now) {
		// Delivered late (an outage, quiet hours...): the "expired" notice
		// tells the truth now; a stale warning would not.
		return x.finish(ctx, events.OutcomeSkipped, "stale: the password expired before this warning could go out", nil)
	}
	user, err := x.lookup(ctx)
	if err != nil {
		return err
	}
	upn := firstNonEmpty(user.UPN, a.User.UPN)
	loc := s.clock.zone(upn)
	if wait := s.clock.quietFor(now, loc); wait > 0 {
		until := now.Add(wait).In(loc).Format(dateTimeLayout)
		x.audit(ctx, "quiet_hours", OutcomeDeferred, 0, "deferred until "+until)
		ch := channelEmail
		if s.set.Teams.Enabled && user.ID != "" {
			ch = channelTeams
		}
		metrics.Notification(ch, metrics.NotifyDeferred)
		return &natsx.RetryLater{After: wait, Err: fmt.Errorf("quiet hours in %s until %s", loc, until)}
	}
	msg, err := s.tpl.Render(n.Template, []string{n.Language, user.PreferredLanguage}, x.data(n, user, loc))
	if err != nil {
		return x.deadLetter(ctx, err)
	}
	if a.DryRun {
		return x.finish(ctx, events.OutcomeDryRun, fmt.Sprintf("would send %q in %s", msg.Subject, msg.Language), nil)
	}

	if s.set.Teams.Enabled && user.ID != "" {
		done, err := x.sendTeams(ctx, key, user.ID, msg)
		if done || err != nil {
			return err
		}
	}
	to := firstNonEmpty(user.Mail, a.User.Mail)
	if to == "" {
		return x.deadLetter(ctx, fmt.Errorf("%s has no mail address", upn))
	}
	return x.sendEmail(ctx, key, to, msg)
}

// lookup reads the cloud user for language, mail and id. A user Graph does
// not know is notified by the mail address the action carries, if any.
func (x *delivery) lookup(ctx context.Context) (graph.User, error) {
	id := firstNonEmpty(x.a.User.CloudID, x.a.User.UPN)
	if id == "" || x.s.graph == nil {
		return graph.User{Mail: x.a.User.Mail, UPN: x.a.User.UPN}, nil
	}
	u, err := x.s.graph.GetUser(ctx, id)
	switch {
	case err == nil:
		x.cloud = u.ID
		return *u, nil
	case graph.IsNotFound(err):
		x.audit(ctx, "get_user", events.OutcomeSkipped, http.StatusNotFound, "no cloud account; using the AD mail address")
		return graph.User{Mail: x.a.User.Mail, UPN: x.a.User.UPN}, nil
	default:
		x.audit(ctx, "get_user", events.OutcomeFailed, graph.StatusOf(err), err.Error())
		return graph.User{}, retryable(err)
	}
}

func (x *delivery) data(n events.Notice, u graph.User, loc *time.Location) Data {
	d := Data{DisplayName: firstNonEmpty(n.DisplayName, u.DisplayName, u.UPN, x.a.User.UPN), UPN: firstNonEmpty(u.UPN, x.a.User.UPN),
		Template: n.Template, LeadDays: n.LeadDays, DaysLeft: max(n.LeadDays, 0), DaysAgo: max(-n.LeadDays, 0),
		ChangePasswordURL: x.s.set.ChangePasswordURL, Helpdesk: x.s.set.Helpdesk, TimeZone: loc.String()}
	if !n.Expiry.IsZero() {
		d.Expiry, d.ExpiryDate = n.Expiry.In(loc).Format(dateTimeLayout), n.Expiry.In(loc).Format(dateLayout)
	}
	if !n.PasswordSetAt.IsZero() {
		d.PasswordSetAt = n.PasswordSetAt.In(loc).Format(dateTimeLayout)
	}
	return d
}

// sendTeams tries the activity feed. done: the notice is settled (sent,
// skipped by the ledger); false with a nil error: fall back to email.
func (x *delivery) sendTeams(ctx context.Context, key, userID string, m Message) (done bool, err error) {
	s := x.s
	sl, err := s.take(ctx, s.teams, channelTeams)
	if err != nil {
		return true, err
	}
	res, rev, entry, err := s.ledger.claim(ctx, key, x.a.ID, "teams", "")
	if err != nil || res != claimed {
		sl.Done(ctx, false)
		if err != nil {
			return true, err
		}
		return true, x.ledgerSkip(ctx, res, entry)
	}
	web := firstNonEmpty(s.set.Teams.WebURL, s.set.ChangePasswordURL)
	act := graph.Activity{TopicText: m.Subject, TopicWebURL: web, ActivityType: s.set.Teams.ActivityType,
		PreviewText: preview(m.Teams), TeamsAppID: s.set.Teams.AppID,
		TemplateParameters: map[string]string{"systemDefaultText": m.Teams}}
	if s.set.Teams.ActivityType != "systemDefault" {
		act.TemplateParameters = nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.sendTimeout)
	err = s.msg.SendActivityNotification(sctx, userID, act)
	cancel()
	sl.Done(ctx, err == nil || graph.StatusOf(err) == 0)
	countSend(channelTeams, err)
	if err == nil {
		x.audit(ctx, "send_teams", events.OutcomeOK, 0, "activity feed, "+m.Language)
		if err := s.ledger.sent(ctx, key, rev, entry); err != nil {
			return true, err
		}
		return true, x.finish(ctx, events.OutcomeOK, "teams", nil)
	}
	var ge *graph.Error
	switch {
	case errors.As(err, &ge) && (ge.Status == http.StatusForbidden || ge.Status == http.StatusNotFound ||
		(ge.Status >= 400 && ge.Status < 500 && ge.Status != http.StatusTooManyRequests && ge.Status != http.StatusRequestTimeout)):
		// 403: the Teams app is not installed for the user (or no
		// permission); any other refusal: email still reaches them.
		x.audit(ctx, "send_teams", events.OutcomeSkipped, ge.Status, "falling back to email: "+ge.Error())
		if _, lerr := s.ledger.failed(ctx, key, rev, entry, false); lerr != nil {
			return true, lerr
		}
		return false, nil
	default:
		if ge != nil && ge.Status == http.StatusTooManyRequests && ge.RetryAfter > 0 {
			sl.Block(ctx, ge.RetryAfter)
		}
		return true, x.sendFailed(ctx, "send_teams", key, rev, entry, err)
	}
}

// sendEmail sends from the first free sender mailbox. A 429 (someone else
// uses the mailbox too) closes that sender for its Retry-After and tries
// the next one.
func (x *delivery) sendEmail(ctx context.Context, key, to string, m Message) error {
	s := x.s
	for attempt := 0; ; attempt++ {
		sl, err := s.take(ctx, s.senders, channelEmail)
		if err != nil {
			return err
		}
		res, rev, entry, err := s.ledger.claim(ctx, key, x.a.ID, "email", sl.Name)
		if err != nil || res != claimed {
			sl.Done(ctx, false)
			if err != nil {
				return err
			}
			return x.ledgerSkip(ctx, res, entry)
		}
		mail := graph.Mail{To: []string{to}, Subject: m.Subject, Text: m.Text, HTML: m.HTML,
			SaveToSentItems: s.set.SaveToSentItems,
			Headers:         map[string]string{"x-pwsync-notice": key, "x-pwsync-action": x.a.ID}}
		// Bounded: a successor counts an unanswered send as in flight
		// for sendTimeout (pacestore.go).
		sctx, cancel := context.WithTimeout(ctx, s.sendTimeout)
		err = s.msg.SendMail(sctx, sl.Name, mail)
		cancel()
		sl.Done(ctx, err == nil || graph.StatusOf(err) == 0)
		countSend(channelEmail, err)
		if err == nil {
			x.audit(ctx, "send_email", events.OutcomeOK, 0, "from "+sl.Name+", "+m.Language)
			if err := s.ledger.sent(ctx, key, rev, entry); err != nil {
				return err
			}
			return x.finish(ctx, events.OutcomeOK, "email from "+sl.Name, nil)
		}
		var ge *graph.Error
		if errors.As(err, &ge) && ge.Status == http.StatusTooManyRequests && attempt < len(s.set.Senders) {
			sl.Block(ctx, max(ge.RetryAfter, time.Second))
			x.audit(ctx, "send_email", events.OutcomeFailed, ge.Status, "from "+sl.Name+": throttled; trying another sender")
			if _, lerr := s.ledger.failed(ctx, key, rev, entry, false); lerr != nil {
				return lerr
			}
			continue
		}
		return x.sendFailed(ctx, "send_email", key, rev, entry, err)
	}
}
