package adwrite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestRequireChangeOncePerAction runs against the Samba DC: the action sets
// pwdLastSet 0; the same action delivered again (a redelivery, or a
// restart after the write) writes nothing, even after the user changed
// the password; a dry-run action writes nothing; an unknown domain is a
// dead letter, not a retry.
func TestRequireChangeOncePerAction(t *testing.T) {
	dc := adtest.Require(t)
	ou := dc.NewOU(t)
	u := dc.CreateUser(t, ou, "adw-alice", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	_, conn := natstest.Run(t)
	ctx := context.Background()
	s, err := New(ctx, Deps{JS: conn.JS, Log: zerolog.Nop(), Domains: []Domain{{Name: "example.test", URL: dc.LDAPSURL,
		CAFile: dc.CAFile, BindDN: dc.BindDN, BindPassword: dc.BindPassword}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	pwd := func() string { return dc.Read(t, u.DN, "pwdLastSet").GetAttributeValue("pwdLastSet") }
	a := events.Action{ID: "risk.test.det-1", Kind: events.ActionADRequireChange, Rule: "risk", EventTime: time.Now(),
		User: events.UserRef{Domain: "example.test", ObjectGUID: u.GUID, DN: u.DN, UPN: u.UPN}}

	dry := a
	dry.ID, dry.DryRun = "dry-run."+a.ID, true
	if err := s.Handle(ctx, dry, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if pwd() == "0" {
		t.Fatal("a dry-run action wrote AD")
	}
	if err := s.Handle(ctx, a, natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	if pwd() != "0" {
		t.Fatal("pwdLastSet not 0 after the action")
	}
	dc.ResetPassword(t, u.DN, "Changed.Passw0rd-2", false)
	if err := s.Handle(ctx, a, natsx.Meta{NumDelivered: 2}); err != nil {
		t.Fatal(err)
	}
	if pwd() == "0" {
		t.Fatal("the same action wrote AD a second time")
	}
	// A crash between the write and its done record: the redelivery finds
	// no record, but the password was set since the detection.
	if err := s.done.Purge(ctx, doneKey(a)); err != nil {
		t.Fatal(err)
	}
	if err := s.Handle(ctx, a, natsx.Meta{NumDelivered: 2}); err != nil {
		t.Fatal(err)
	}
	if pwd() == "0" {
		t.Fatal("a redelivery without its done record forced a user who had set a new password since the detection")
	}
	// The first delivery of a newer detection writes.
	newer := a
	newer.ID, newer.EventTime = "risk.test.det-3", time.Now()
	if err := s.Handle(ctx, newer, natsx.Meta{NumDelivered: 1}); err != nil {
		t.Fatal(err)
	}
	if pwd() != "0" {
		t.Fatal("a newer detection did not force the change")
	}
	bad := a
	bad.ID, bad.User.Domain = "risk.test.det-2", "other.test"
	if err := s.Handle(ctx, bad, natsx.Meta{}); err == nil || !errorsIsPermanent(err) {
		t.Fatalf("unknown domain: %v, want a permanent error", err)
	}
}

func errorsIsPermanent(err error) bool { return errors.Is(err, natsx.ErrPermanent) }

// fakeRisk is Identity Protection as the check reads it: one risky user, or
// an error.
type fakeRisk struct {
	user  *events.RiskyUser
	err   error
	reads int
}

func (f *fakeRisk) RiskyUser(context.Context, string) (*events.RiskyUser, error) {
	f.reads++
	return f.user, f.err
}
func (f *fakeRisk) DismissRisk(context.Context, []string) error { return nil }

// TestCheckRisk: a check_risk waits for its time; then a user still at
// risk is an alert to the admins (once, whatever the redeliveries), and a
// remediated, dismissed or unknown one is not.
func TestCheckRisk(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := context.Background()
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	changed := now.Add(-time.Hour)
	tests := []struct {
		name      string
		user      *events.RiskyUser
		err       error
		notBefore time.Time
		wait      bool // delayed until notBefore, nothing read
		alert     bool
		permanent bool
	}{
		{"not yet", &events.RiskyUser{State: "atRisk"}, nil, now.Add(10 * time.Minute), true, false, false},
		{"still at risk", &events.RiskyUser{State: "atRisk", Level: "high", Detail: "none"}, nil, now, false, true, false},
		{"confirmed compromised", &events.RiskyUser{State: "confirmedCompromised", Level: "high"}, nil, now.Add(-time.Minute), false, true, false},
		{"remediated on premises", &events.RiskyUser{State: "remediated", Level: "none", Detail: events.RiskDetailChangedOnPrem}, nil, now, false, false, false},
		{"dismissed", &events.RiskyUser{State: "dismissed", Level: "none"}, nil, now, false, false, false},
		{"no risk record", nil, &graph.Error{Status: http.StatusNotFound}, now, false, false, false},
		{"unlicensed", nil, &graph.Error{Status: http.StatusForbidden}, now, false, false, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			risk := &fakeRisk{user: tc.user, err: tc.err}
			s, err := New(ctx, Deps{JS: conn.JS, Log: zerolog.Nop(), Risk: risk, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			upn := fmt.Sprintf("check-%d@example.test", i)
			a := events.Action{ID: "risk-check." + upn, Kind: events.ActionCheckRisk, Rule: "risk-dismiss", EventTime: changed,
				NotBefore: tc.notBefore, User: events.UserRef{UPN: upn, CloudID: "c" + upn}}
			err = s.Handle(ctx, a, natsx.Meta{NumDelivered: 1})
			var later *natsx.RetryLater
			switch {
			case tc.wait:
				if !errors.As(err, &later) || later.After != tc.notBefore.Sub(now) || risk.reads != 0 {
					t.Fatalf("before its time: %v (reads %d), want a wait of %v and no read", err, risk.reads, tc.notBefore.Sub(now))
				}
				return
			case tc.permanent:
				if !errorsIsPermanent(err) {
					t.Fatalf("%v, want a permanent error", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if err := s.Handle(ctx, a, natsx.Meta{NumDelivered: 2}); err != nil { // a redelivery
				t.Fatal(err)
			}
			if got := alerts(t, conn.JS, upn); got != map[bool]int{true: 1, false: 0}[tc.alert] {
				t.Fatalf("%d alerts for %s, want alert=%v once", got, upn, tc.alert)
			}
		})
	}
}

// alerts counts the alert actions about upn on the ACTIONS stream.
func alerts(t *testing.T, js jetstream.JetStream, upn string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"actions.alert"}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var a events.Action
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			t.Fatal(err)
		}
		if a.User.UPN == upn {
			n++
			if !strings.Contains(a.Reason, "still at risk") {
				t.Errorf("alert reason %q", a.Reason)
			}
		}
	}
	return n
}
