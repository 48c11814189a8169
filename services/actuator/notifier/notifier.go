// Package notifier delivers notify actions to users (Teams activity feed,
// email through Graph sendMail) and alert actions to the admins (a Teams
// Workflows webhook): templates per language, the user's time zone and
// quiet hours, pacing under the mailbox and Teams limits, and a KV ledger
// that sends each notice once.
//
// It consumes actions.notify and actions.alert through its own durable
// consumer, on one replica at a time (a lease): two replicas sending at
// once would each use the whole per-mailbox budget. The senders' pacing is
// written through to KV, so the replica that takes the lease over goes on
// from the windows and day count its predecessor left (pacestore.go). The
// actuator leaves these kinds to it.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Names in NATS.
const (
	Consumer     = natsx.ConsumerNotifier
	BucketLedger = natsx.BucketNotices
	LeaseName    = natsx.LeaseNotifier
	// LedgerTTL outlives any password's lifetime: a notice of an old
	// password is never due again, so its key may then go.
	LedgerTTL = 400 * 24 * time.Hour
	// ackWait covers the messages a paced consumer holds while waiting
	// for a send slot (KeepAlive covers the one being handled).
	ackWait = 2 * time.Minute
)

// OutcomeDeferred: a notice waits for the end of quiet hours.
const OutcomeDeferred = "deferred"

// Deps is what the notifier needs from the process.
type Deps struct {
	JS        jetstream.JetStream
	Graph     graph.Client // user look-up: preferredLanguage, mail, id
	Messenger graph.Messenger
	Settings  config.Notify
	Replicas  int    // of the ledger bucket; default 1
	Holder    string // this replica in the lease; default hostname-pid
	Log       zerolog.Logger
	Now       func() time.Time // nil = time.Now; quiet hours and dates
	// HTTP posts alert cards; nil = a client with a 10 s timeout.
	HTTP *http.Client
	// MaxWait bounds a wait for a send slot inside one delivery; longer
	// waits hand the message back to JetStream. 0 = 60 s.
	MaxWait time.Duration
	// SendTimeout bounds one Graph send; a successor counts a send its
	// predecessor never saw answered as in flight that long. 0 = 30 s.
	SendTimeout time.Duration
	// AckWait of the notifier's consumer; 0 = 2 min. Tests shorten it to
	// see a killed holder's unacknowledged messages come back sooner.
	AckWait time.Duration
	// MailboxConcurrency bounds sends in flight per sender mailbox; 0 =
	// Outlook's 4 (MailboxConcurrency). Tests raise it to show the bound
	// is what keeps the simulator's concurrency limit.
	MailboxConcurrency int
}

// Service delivers notices and alerts.
type Service struct {
	js      jetstream.JetStream
	graph   graph.Client
	msg     graph.Messenger
	set     config.Notify
	tpl     *Templates
	clock   *clock
	ledger  *ledger
	leases  jetstream.KeyValue
	audit   *audit.Writer
	senders *pool
	teams   *pool
	hooks   *pool
	hc      *http.Client
	log     zerolog.Logger
	now     func() time.Time
	holder  string
	maxWait time.Duration
	// pacing writes the senders' pacing through to KV while this replica
	// holds the lease.
	pacing      *paceStore
	sendTimeout time.Duration
	// deadLetters: alert the admins about new dead letters (deadletters.go).
	deadLetters bool
}

// New loads and checks the templates (an unknown field refuses the start),
// and ensures the ledger bucket and the consumer.
func New(ctx context.Context, d Deps) (*Service, error) {
	set := d.Settings
	tpl, err := LoadTemplates(set.TemplatesDir, set.DefaultLanguage)
	if err != nil {
		return nil, fmt.Errorf("notify templates: %w", err)
	}
	clk, err := newClock(set)
	if err != nil {
		return nil, err
	}
	replicas := max(d.Replicas, 1)
	aw := d.AckWait
	if aw <= 0 {
		aw = ackWait
	}
	kv, err := d.JS.CreateOrUpdateKeyValue(ctx, natsx.NotifierBucket(BucketLedger, replicas, LedgerTTL))
	if err != nil {
		return nil, fmt.Errorf("ensuring bucket %s: %w", BucketLedger, err)
	}
	if _, err := d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamActions, natsx.NotifierConsumer(aw)); err != nil {
		return nil, fmt.Errorf("ensuring consumer %s: %w", Consumer, err)
	}
	pkv, err := d.JS.CreateOrUpdateKeyValue(ctx, natsx.NotifierBucket(BucketPacing, replicas,
		max(pacingTTL, set.Pacing.MailDayWindow+time.Hour)))
	if err != nil {
		return nil, fmt.Errorf("ensuring bucket %s: %w", BucketPacing, err)
	}
	deadLetters := set.DeadLetters.Enabled && set.WorkflowsWebhookURL.Value() != ""
	leases, err := natsx.Bucket(ctx, d.JS, natsx.BucketLeases)
	if err != nil {
		return nil, err
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	holder := d.Holder
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	hc := d.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	p := set.Pacing
	conc := d.MailboxConcurrency
	if conc <= 0 {
		conc = MailboxConcurrency
	}
	day := p.MailDayWindow
	if day <= 0 {
		day = 24 * time.Hour
	}
	sendTimeout := d.SendTimeout
	if sendTimeout <= 0 {
		sendTimeout = 30 * time.Second
	}
	s := &Service{js: d.JS, graph: d.Graph, msg: d.Messenger, set: set, tpl: tpl, clock: clk,
		ledger: &ledger{kv: kv, now: now}, leases: leases, audit: audit.NewWriter(natsx.NewPublisher(d.JS), now),
		// Pacing is real time whatever the injected clock says.
		senders: newPool(set.Senders, time.Now, conc, Limit{p.MailPerWindow, p.MailWindow}, Limit{p.MailPerDay, day}),
		teams:   newPool([]string{"teams"}, time.Now, 0, Limit{p.TeamsPerWindow, p.TeamsWindow}),
		// Workflows publish no limit; the retired connectors' documented
		// ones are a safe bet for a channel that humans read.
		hooks: newPool([]string{"webhook"}, time.Now, 0, Limit{4, time.Second}, Limit{60, 30 * time.Second}),
		hc:    hc, log: d.Log, now: now, holder: holder, maxWait: d.MaxWait, deadLetters: deadLetters,
		pacing:      &paceStore{kv: pkv, holder: holder, sendTimeout: sendTimeout, log: d.Log, revs: map[string]uint64{}},
		sendTimeout: sendTimeout}
	if s.maxWait <= 0 {
		s.maxWait = 60 * time.Second
	}
	if deadLetters {
		if err := s.ensureDeadLetterConsumer(ctx); err != nil {
			return nil, err
		}
	}
	s.log.Info().Strs("languages", tpl.Languages()).Int("senders", len(set.Senders)).Bool("teams", set.Teams.Enabled).
		Bool("alerts_webhook", set.WorkflowsWebhookURL.IsSet()).Msg("notifier ready")
	return s, nil
}

// Run delivers while this replica holds the notifier lease, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	l := lease.New(s.leases, LeaseName, s.holder, natsx.LeaseRenew, s.log)
	return l.Run(ctx, func(ctx context.Context) error {
		if err := s.takeOver(ctx); err != nil {
			return err
		}
		s.log.Info().Str("holder", s.holder).Bool("dead_letter_alerts", s.deadLetters).Msg("notifier delivering")
		dlq := make(chan error, 1)
		if s.deadLetters {
			go func() { dlq <- s.runDeadLetters(ctx) }()
		} else {
			dlq <- nil
		}
		h := natsx.Process(context.WithoutCancel(ctx), s.log, s.maxWait+time.Minute, s.Handle)
		err := natsx.Consume(ctx, s.js, natsx.StreamActions, Consumer, s.set.Concurrency, h)
		return errors.Join(err, <-dlq)
	})
}

// takeOver starts this lease term from the pacing its predecessor left:
// the senders' windows and day counts from KV (written through from now
// on), and a pause of one Teams window, which is shorter than any handover
// after a crash but not necessarily after a release.
func (s *Service) takeOver(ctx context.Context) error {
	if err := s.senders.attach(ctx, s.pacing); err != nil {
		return fmt.Errorf("notifier pacing: %w", err)
	}
	s.teams.blockAll(s.set.Pacing.TeamsWindow)
	return nil
}

// Handle delivers one action.
func (s *Service) Handle(ctx context.Context, a events.Action, meta natsx.Meta) error {
	log := zerolog.Ctx(ctx).With().Str("action_id", a.ID).Str("action", string(a.Kind)).Str("upn", a.User.UPN).Logger()
	ctx = log.WithContext(ctx)
	x := &delivery{s: s, a: a}
	switch a.Kind {
	case events.ActionAlert:
		return x.alert(ctx)
	case events.ActionNotify:
		return x.notify(ctx)
	}
	return nil // not ours (the filter makes this unreachable)
}

// delivery is one action being delivered.
type delivery struct {
	s     *Service
	a     events.Action
	cloud string // cloud user id, once known
}

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

// sendFailed settles a refused send and decides: retry (JetStream
// redelivery), or dead letter after max_attempts or a permanent refusal.
func (x *delivery) sendFailed(ctx context.Context, step, key string, rev uint64, entry ledgerEntry, err error) error {
	status := graph.StatusOf(err)
	var ge *graph.Error
	permanent := errors.As(err, &ge) && !ge.Retryable()
	if status == 0 && ge != nil && !notSent(err) {
		// A transport error: Graph may have accepted the message. Leave
		// the claim "sending" (at most once, see ledger.go).
		x.audit(ctx, step, events.OutcomeFailed, 0, "outcome unknown, not resent: "+err.Error())
		return x.finish(ctx, events.OutcomeFailed, "in doubt after a transport error; not resent", nil)
	}
	attempts, lerr := x.s.ledger.failed(ctx, key, rev, entry, true)
	if lerr != nil {
		return lerr
	}
	x.audit(ctx, step, events.OutcomeFailed, status, fmt.Sprintf("attempt %d: %v", attempts, err))
	if permanent || attempts >= x.s.set.MaxAttempts {
		return x.deadLetter(ctx, err)
	}
	return retryable(err)
}

func (x *delivery) ledgerSkip(ctx context.Context, res claimResult, e ledgerEntry) error {
	if res == alreadySent {
		return x.finish(ctx, events.OutcomeSkipped, "already sent ("+e.Channel+" at "+e.At.Format(time.RFC3339)+")", nil)
	}
	return x.finish(ctx, events.OutcomeSkipped, "in doubt: a send by "+e.ActionID+" at "+e.At.Format(time.RFC3339)+
		" did not settle; not resent (at most once)", nil)
}

// alert posts an ActionAlert to the Workflows webhook, once per action.
func (x *delivery) alert(ctx context.Context) error {
	s, a := x.s, x.a
	url := s.set.WorkflowsWebhookURL.Value()
	if url == "" {
		// No webhook: the alert is the audit record and the log line, as
		// before notifications existed.
		zerolog.Ctx(ctx).Error().Str("rule", a.Rule).Str("alert", a.Reason).Msg("alert")
		return x.finish(ctx, events.OutcomeOK, a.Reason, nil)
	}
	if a.DryRun {
		return x.finish(ctx, events.OutcomeDryRun, "would post the alert card", nil)
	}
	key := events.KeySafe("alert." + a.ID)
	sl, err := s.take(ctx, s.hooks, channelWebhook)
	if err != nil {
		return err
	}
	res, rev, entry, err := s.ledger.claim(ctx, key, a.ID, "webhook", "")
	if err != nil || res != claimed {
		sl.Done(ctx, false)
		if err != nil {
			return err
		}
		return x.ledgerSkip(ctx, res, entry)
	}
	err = postCard(ctx, s.hc, url, alertFromAction(a))
	sl.Done(ctx, true)
	countSend(channelWebhook, err)
	if err == nil {
		x.audit(ctx, "post_alert", events.OutcomeOK, 0, "workflows webhook")
		if err := s.ledger.sent(ctx, key, rev, entry); err != nil {
			return err
		}
		return x.finish(ctx, events.OutcomeOK, a.Reason, nil)
	}
	we := &webhookError{msg: err.Error()}
	errors.As(err, &we)
	attempts, lerr := s.ledger.failed(ctx, key, rev, entry, true)
	if lerr != nil {
		return lerr
	}
	x.audit(ctx, "post_alert", events.OutcomeFailed, we.status, err.Error())
	switch {
	case !we.retryable() || attempts >= s.set.MaxAttempts:
		return x.deadLetter(ctx, err)
	case we.retryAfter > 0:
		sl.Block(ctx, we.retryAfter)
		return &natsx.RetryLater{After: we.retryAfter, Err: err}
	}
	return err
}

func (x *delivery) deadLetter(ctx context.Context, err error) error {
	_ = x.finish(ctx, events.OutcomeDeadLetter, err.Error(), err)
	return natsx.Permanent(err)
}

func (x *delivery) audit(ctx context.Context, step, outcome string, status int, detail string) {
	rec := events.AuditRecord{Kind: "step", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), Step: step, User: x.a.User, CloudID: x.cloud, Outcome: outcome,
		HTTPStatus: status, Detail: detail}
	if err := x.s.audit.Write(ctx, rec); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("step", step).Msg("audit write failed")
	}
	ev := zerolog.Ctx(ctx).Info()
	if outcome == events.OutcomeFailed {
		ev = zerolog.Ctx(ctx).Warn()
	}
	ev.Str("step", step).Str("outcome", outcome).Int("http_status", status).Str("detail", detail).Msg("notify step")
}

func (x *delivery) finish(ctx context.Context, outcome, detail string, cause error) error {
	rec := events.AuditRecord{Kind: "action", EventID: x.a.EventID, ActionID: x.a.ID, Rule: x.a.Rule,
		Action: string(x.a.Kind), User: x.a.User, CloudID: x.cloud, Outcome: outcome, Detail: detail,
		HTTPStatus: graph.StatusOf(cause)}
	if !x.a.EventTime.IsZero() {
		rec.LatencyMS = float64(x.s.now().Sub(x.a.EventTime).Microseconds()) / 1000
	}
	return x.s.audit.Write(ctx, rec)
}

// retryable hands a Graph error back to JetStream: after Retry-After when
// Graph gave one, else with the adapter's backoff; refusals are permanent.
func retryable(err error) error {
	var ge *graph.Error
	if errors.As(err, &ge) {
		if !ge.Retryable() {
			return natsx.Permanent(err)
		}
		if ge.RetryAfter > 0 {
			return &natsx.RetryLater{After: ge.RetryAfter, Err: err}
		}
	}
	return err
}

// Channels, as metrics and the ledger name them.
const (
	channelEmail   = "email"
	channelTeams   = "teams"
	channelWebhook = "webhook"
)

// take waits for a send slot of the channel's pool (metrics: the wait); a
// wait beyond the budget becomes a later redelivery (metrics: deferred).
func (s *Service) take(ctx context.Context, p *pool, channel string) (slot, error) {
	start := time.Now()
	sl, err := p.take(ctx, s.maxWait)
	var tl errTooLong
	switch {
	case err == nil:
		metrics.PacingWait(channel, time.Since(start))
		return sl, nil
	case errors.As(err, &tl):
		metrics.Notification(channel, metrics.NotifyDeferred)
		return slot{}, &natsx.RetryLater{After: tl.wait, Err: err}
	}
	return slot{}, err
}

// counted records a send's outcome on its channel.
func countSend(channel string, err error) {
	if err == nil {
		metrics.Notification(channel, metrics.NotifySent)
		return
	}
	metrics.Notification(channel, metrics.NotifyFailed)
}

// notSent reports whether a transport error happened before the request
// could reach Graph (no connection): then the message surely was not sent.
func notSent(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial")
}

// preview fits Teams' 150 characters.
func preview(s string) string {
	r := []rune(s)
	if len(r) <= 150 {
		return s
	}
	return strings.TrimSpace(string(r[:149])) + "…"
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
