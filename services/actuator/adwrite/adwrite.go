// Package adwrite executes the actions that write AD rather than Graph:
// the risk rule's "must change password at next logon" for synced users
// (pwdLastSet 0; ingest sees it and the forced-change rule does the rest:
// sessions revoked, the pending group, the undo at the password change),
// the dismissal of a user's Identity Protection risk, and the later check
// that the risk is gone (an alert if not). It consumes
// natsx.ConsumerADWriter; the actuator acks these kinds unread.
package adwrite

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Domain is how to reach one AD domain. The bind account needs "Write
// pwdLastSet" on the users (the helpdesk's "Reset user passwords and force
// password change at next logon" delegation includes it).
type Domain struct {
	Name               string
	URL                string   // the preferred DC
	URLs               []string // more DCs, tried in order when the ones before do not answer
	StartTLS           bool
	CAFile             string
	InsecureSkipVerify bool
	BindDN             string
	BindPassword       string
	Kerberos           *ldapconn.Kerberos // instead of BindDN/BindPassword
}

// dcs are the domain's DCs in the order to try them.
func (d Domain) dcs() []string {
	if d.URL == "" {
		return d.URLs
	}
	return append([]string{d.URL}, d.URLs...)
}

// Risk is the part of Identity Protection the writer uses (the
// dismissal and the still-at-risk check); *msgraph.Client implements it.
type Risk interface {
	RiskyUser(ctx context.Context, userID string) (*events.RiskyUser, error)
	DismissRisk(ctx context.Context, userIDs []string) error
}

// Deps is what the writer needs.
type Deps struct {
	JS      jetstream.JetStream
	Domains []Domain
	Risk    Risk // for dismiss_risk and check_risk; nil = those actions fail
	Log     zerolog.Logger
	Now     func() time.Time // nil = time.Now
}

// Service consumes the AD writer's actions.
type Service struct {
	js      jetstream.JetStream
	domains map[string]Domain
	risk    Risk
	done    jetstream.KeyValue
	audit   *audit.Writer
	pub     *natsx.Publisher
	log     zerolog.Logger
	now     func() time.Time

	mu    sync.Mutex            // guards conns
	conns map[string]*ldap.Conn // per domain: kept, since an LDAPS dial and bind cost seconds on a busy DC
}

// New ensures the consumer and opens the idempotency bucket.
func New(ctx context.Context, d Deps) (*Service, error) {
	if _, err := d.JS.CreateOrUpdateConsumer(ctx, natsx.StreamActions, natsx.ADWriterConsumer()); err != nil {
		return nil, fmt.Errorf("ensuring consumer %s: %w", natsx.ConsumerADWriter, err)
	}
	done, err := natsx.Bucket(ctx, d.JS, natsx.BucketDone)
	if err != nil {
		return nil, err
	}
	pub := natsx.NewPublisher(d.JS)
	s := &Service{js: d.JS, domains: map[string]Domain{}, risk: d.Risk, done: done, conns: map[string]*ldap.Conn{},
		audit: audit.NewWriter(pub, nil), pub: pub, log: d.Log.With().Str("component", "adwrite").Logger(), now: d.Now}
	if s.now == nil {
		s.now = time.Now
	}
	for _, dom := range d.Domains {
		s.domains[strings.ToLower(dom.Name)] = dom
	}
	return s, nil
}

// Run consumes until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info().Int("domains", len(s.domains)).Msg("AD writer started")
	h := natsx.Process(context.WithoutCancel(ctx), s.log, 50*time.Second, nil, s.Handle)
	defer s.Close()
	return natsx.Consume(ctx, s.js, natsx.StreamActions, natsx.ConsumerADWriter, 4, h)
}

func doneKey(a events.Action) string { return events.KeySafe("adwrite." + a.ID) }

// Handle executes one action, once: a done record is kept per action ID.
// A check_risk delivered before its NotBefore waits (a delayed NAK).
func (s *Service) Handle(ctx context.Context, a events.Action, meta natsx.Meta) error {
	log := s.log.With().Str("action_id", a.ID).Str("action", string(a.Kind)).Str("upn", a.User.UPN).Logger()
	if _, err := s.done.Get(ctx, doneKey(a)); err == nil {
		return s.record(ctx, a, events.OutcomeSkipped, "already done", nil)
	} else if !natsx.IsNotFound(err) {
		return fmt.Errorf("reading %s: %w", doneKey(a), err)
	}
	if a.DryRun {
		return s.record(ctx, a, events.OutcomeDryRun, "dry run: nothing written", nil)
	}
	var err error
	step, detail := "", ""
	switch a.Kind {
	case events.ActionADRequireChange:
		step = "ad_pwdlastset_0"
		detail, err = s.requireChange(ctx, a, meta.NumDelivered > 1)
	case events.ActionDismissRisk:
		step, err = "dismiss_risk", s.dismiss(ctx, a)
	case events.ActionCheckRisk:
		step = "check_risk"
		detail, err = s.checkRisk(ctx, a)
	default:
		return natsx.Permanent(fmt.Errorf("adwrite: unknown action kind %q", a.Kind))
	}
	if errors.Is(err, errNotYet) {
		if meta.NumDelivered <= 1 { // the timeline shows the wait once
			_ = s.record(ctx, a, events.OutcomeWaiting, "until "+a.NotBefore.UTC().Format(time.RFC3339), nil)
		}
		return err
	}
	if err != nil {
		outcome := events.OutcomeFailed
		if errors.Is(err, natsx.ErrPermanent) {
			outcome = events.OutcomeDeadLetter
		}
		_ = s.record(ctx, a, outcome, err.Error(), nil) // the error is what matters
		return err
	}
	if _, err := s.done.Put(ctx, doneKey(a), []byte(step)); err != nil {
		return fmt.Errorf("recording %s: %w", doneKey(a), err)
	}
	log.Info().Str("step", step).Float64("latency_ms", latencyMS(a)).Msg("AD writer: done")
	if detail == "" {
		detail = step
	}
	return s.record(ctx, a, events.OutcomeOK, detail, nil)
}

// requireChange sets pwdLastSet 0. A redelivery may come after a crash
// between the write and its done record, possibly after the user already
// set a new password: it first reads pwdLastSet and writes only if the
// password was not set since the detection (nor is already 0).
func (s *Service) requireChange(ctx context.Context, a events.Action, redelivered bool) (string, error) {
	dom, ok := s.domains[strings.ToLower(a.User.Domain)]
	if !ok {
		return "", natsx.Permanent(fmt.Errorf("no AD domain %q configured", a.User.Domain))
	}
	if a.User.DN == "" {
		return "", natsx.Permanent(errors.New("the action names no DN"))
	}
	if redelivered {
		v, err := s.pwdLastSet(dom, a.User.DN)
		switch {
		case err != nil:
			return "", s.ldapErr(fmt.Errorf("reading pwdLastSet of %s: %w", a.User.DN, err))
		case v == 0:
			return "already must change (pwdLastSet 0): not written again", nil
		case !a.EventTime.IsZero() && events.FileTime(v).After(a.EventTime):
			return "password set since the detection: not forced again", nil
		}
	}
	if err := s.modify(dom, a.User.DN); err != nil {
		return "", s.ldapErr(fmt.Errorf("setting pwdLastSet 0 on %s: %w", a.User.DN, err))
	}
	return "", nil
}

// ldapErr makes a missing object or missing right permanent: no retry
// fixes them.
func (s *Service) ldapErr(err error) error {
	var le *ldap.Error
	if errors.As(err, &le) && (le.ResultCode == ldap.LDAPResultNoSuchObject || le.ResultCode == ldap.LDAPResultInsufficientAccessRights) {
		return natsx.Permanent(err)
	}
	return err
}

// modify sets pwdLastSet 0 on dn.
func (s *Service) modify(dom Domain, dn string) error {
	return s.withConn(dom, func(c *ldap.Conn) error {
		req := ldap.NewModifyRequest(dn, nil)
		req.Replace("pwdLastSet", []string{"0"})
		return c.Modify(req)
	})
}

// pwdLastSet reads dn's pwdLastSet (a FILETIME; 0 = must change).
func (s *Service) pwdLastSet(dom Domain, dn string) (int64, error) {
	var v int64
	err := s.withConn(dom, func(c *ldap.Conn) error {
		res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 30, false,
			"(objectClass=user)", []string{"pwdLastSet"}, nil))
		if err != nil {
			return err
		}
		if len(res.Entries) != 1 {
			return ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("no such user"))
		}
		v, err = strconv.ParseInt(res.Entries[0].GetAttributeValue("pwdLastSet"), 10, 64)
		return err
	})
	return v, err
}

// withConn runs op over the domain's kept connection, made anew when it is
// missing or failed. One operation at a time per domain: the actions are
// rare (a handful an hour), the lock keeps it simple.
func (s *Service) withConn(dom Domain, op func(*ldap.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(dom.Name)
	c := s.conns[key]
	if c == nil || c.IsClosing() {
		var err error
		c, _, err = ldapconn.DialFirst(dom.dcs(), ldapconn.Config{StartTLS: dom.StartTLS, BindDN: dom.BindDN,
			BindPassword: dom.BindPassword, Kerberos: dom.Kerberos, DialTimeout: 10 * time.Second, RequestTimeout: 30 * time.Second},
			dom.CAFile, dom.InsecureSkipVerify)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", dom.Name, err) // retried
		}
		s.conns[key] = c
	}
	err := op(c)
	if err != nil && (c.IsClosing() || ldapconn.IsNetwork(err)) {
		c.Close()
		delete(s.conns, key)
	}
	return err
}

// Close closes the kept connections.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.conns {
		c.Close()
		delete(s.conns, k)
	}
}

func (s *Service) dismiss(ctx context.Context, a events.Action) error {
	if s.risk == nil || a.User.CloudID == "" {
		return natsx.Permanent(errors.New("dismiss_risk needs Graph and the user's cloud ID"))
	}
	err := s.risk.DismissRisk(ctx, []string{a.User.CloudID})
	var ge *graph.Error
	if errors.As(err, &ge) && !ge.Retryable() {
		return natsx.Permanent(err)
	}
	return err
}

func latencyMS(a events.Action) float64 {
	if a.EventTime.IsZero() {
		return 0
	}
	return float64(time.Since(a.EventTime).Microseconds()) / 1000
}

func (s *Service) record(ctx context.Context, a events.Action, outcome, detail string, _ error) error {
	return s.audit.Write(ctx, events.AuditRecord{Kind: "action", EventID: a.EventID, ActionID: a.ID, Rule: a.Rule,
		Action: string(a.Kind), User: a.User, CloudID: a.User.CloudID, Outcome: outcome, Detail: detail, LatencyMS: latencyMS(a)})
}
