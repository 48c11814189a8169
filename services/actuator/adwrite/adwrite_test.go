package adwrite

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
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
	bad := a
	bad.ID, bad.User.Domain = "risk.test.det-2", "other.test"
	if err := s.Handle(ctx, bad, natsx.Meta{}); err == nil || !errorsIsPermanent(err) {
		t.Fatalf("unknown domain: %v, want a permanent error", err)
	}
}

func errorsIsPermanent(err error) bool { return errors.Is(err, natsx.ErrPermanent) }
