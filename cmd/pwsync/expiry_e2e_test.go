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

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/logx"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestExpiryEndToEnd: real Samba AD, the simulator, pwsync in process with
// its clock moved forward, so that one password goes through every lead day
// (TestExpiryAgedEndToEnd ages passwords on the DC instead, real clock). alice is under the domain's
// maxPwdAge, bob in a group a PSO applies to. pwsync is stopped and
// restarted between two lead days: each notice is decided once, and at
// expiry the cloud account is made to require a change. Notices are
// delivered through the simulator's sendMail: each once across the
// restarts, in the user's preferredLanguage when set (bob: French).
func TestExpiryEndToEnd(t *testing.T) {
	s := newStack(t, stackOpts{NATSListen: freeAddr(t), Expiry: []int{14, 7, 0}, Notify: true})
	group := s.dc.CreateGroup(t, s.ou, "pso-users")
	alice := s.dc.CreateUser(t, s.ou, "exp-alice", adtest.UserOpts{})
	bob := s.dc.CreateUser(t, s.ou, "exp-bob", adtest.UserOpts{})
	s.dc.AddMember(t, group, bob.DN)
	s.dc.CreatePSO(t, "pso-e2e", 2, 20*24*time.Hour, group)
	aliceID := s.cloudUser(alice, false)
	bobID := s.cloudUser(bob, false)
	s.mailbox(aliceID, "")
	s.mailbox(bobID, "fr-FR")

	exp := func(u adtest.User) (time.Time, time.Time, string) {
		e := s.dc.Read(t, u.DN, "pwdLastSet", "msDS-UserPasswordExpiryTimeComputed", "msDS-ResultantPSO")
		var set, ex int64
		fmt.Sscan(e.GetAttributeValue("pwdLastSet"), &set)
		fmt.Sscan(e.GetAttributeValue("msDS-UserPasswordExpiryTimeComputed"), &ex)
		return events.FileTime(set), events.FileTime(ex), e.GetAttributeValue("msDS-ResultantPSO")
	}
	aliceSet, aliceExp, _ := exp(alice)
	bobSet, bobExp, bobPSO := exp(bob)
	if bobPSO == "" || bobExp.Sub(bobSet) != 20*24*time.Hour {
		t.Fatalf("bob: expiry %s after set %s, PSO %q: want the PSO's 20 days", bobExp, bobSet, bobPSO)
	}
	t.Logf("alice expires %s (%s after set), bob %s", aliceExp, aliceExp.Sub(aliceSet), bobExp)

	at := func(t0 time.Time) { off := time.Until(t0); clock = func() time.Time { return time.Now().Add(off) } }
	defer func() { clock = time.Now }()

	// phase 1: bob's 14-day point is due (alice's are weeks away)
	at(bobExp.Add(-14*24*time.Hour + time.Minute))
	stop := s.startExpiry(t)
	want := map[string]bool{notice(bob, 14): true}
	got := s.waitActions(t, want)
	mails := []string{bob.UPN + ": Votre mot de passe expire dans 14 jours"}
	s.waitMails(t, mails)
	stop()

	// phase 2, after a restart: bob's 7-day point; the 14-day one is not repeated
	at(bobExp.Add(-7*24*time.Hour + time.Minute))
	stop = s.startExpiry(t)
	want[notice(bob, 7)] = true
	got = s.waitActions(t, want)
	mails = append(mails, bob.UPN+": Votre mot de passe expire dans 7 jours")
	s.waitMails(t, mails)
	stop()

	// phase 3, after another restart: bob expired a week ago (the expired
	// notice and enforcement, which reaches the simulator); alice's
	// 14-day point
	at(aliceExp.Add(-14*24*time.Hour + time.Minute))
	stop = s.startExpiry(t)
	want[notice(bob, 0)] = true
	want["require_password_change/"+bob.UPN] = true
	want[notice(alice, 14)] = true
	got = s.waitActions(t, want)
	s.waitWrites(t, bobID, cloudResetWrites, time.Second) // the flag-only no-op, then the chain
	if w := s.writes(aliceID); len(w) != 0 {
		t.Errorf("alice written before her expiry: %v", w)
	}
	mails = append(mails, bob.UPN+": Votre mot de passe a expiré", alice.UPN+": Your password expires in 14 days")
	s.waitMails(t, mails)
	stop()

	seen := map[string]int{}
	for _, a := range got {
		seen[a.ID]++
		if seen[a.ID] > 1 {
			t.Errorf("action %s decided twice", a.ID)
		}
	}
	if notice := find(got, notice(alice, 14)); notice == nil || notice.Notice.PasswordSetAt.Unix() != aliceSet.Unix() || !notice.Notice.Expiry.Equal(aliceExp) {
		t.Errorf("alice's 14-day notice = %+v", notice)
	}
}

// TestExpiryAgedEndToEnd: the real clock, real Samba AD, passwords aged on
// the DC itself (faketime + a local samba-tool, adtest.AgePassword) while
// pwsync runs. dom is under the domain's 42-day maxPwdAge and aged 50 days
// (cloud-managed: the cloud flag); pso is in a group a 20-day PSO applies to
// and aged 25 days (synced: the chain); soon is aged into its 3-day window.
// Samba itself says dom's and pso's passwords expired; pwsync enforces each
// at once, exactly once, and decides each "expired" notice once; soon gets
// exactly the 3-day notice (the 14- and 7-day points, also past, are skipped
// as superseded, not sent).
func TestExpiryAgedEndToEnd(t *testing.T) {
	const day = 24 * time.Hour
	s := newStack(t, stackOpts{NATSListen: freeAddr(t), Expiry: []int{14, 7, 3, 1, 0}, Notify: true})
	group := s.dc.CreateGroup(t, s.ou, "aged-pso")
	dom := s.dc.CreateUser(t, s.ou, "aged-dom", adtest.UserOpts{})
	pso := s.dc.CreateUser(t, s.ou, "aged-pso", adtest.UserOpts{})
	soon := s.dc.CreateUser(t, s.ou, "aged-soon", adtest.UserOpts{})
	s.dc.AddMember(t, group, pso.DN)
	psoDN := s.dc.CreatePSO(t, "pso-aged", 2, 20*day, group)
	domID, psoID, soonID := s.cloudUser(dom, false), s.cloudUser(pso, true), s.cloudUser(soon, false)
	for _, id := range []string{domID, psoID, soonID} {
		s.mailbox(id, "")
	}
	stop := s.startExpiry(t)
	defer stop()

	// pwsync knows the fresh passwords first: the aging is a change it watches
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: "nats://" + s.opts.NATSListen, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	ctx := context.Background()
	users, err := conn.JS.KeyValue(ctx, natsx.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	pwdLastSet := func(u adtest.User) int64 {
		e, err := users.Get(ctx, events.KeySafe(u.GUID))
		if err != nil {
			return -1
		}
		var st struct {
			AD events.ADUser `json:"ad"`
		}
		if json.Unmarshal(e.Value(), &st) != nil {
			return -1
		}
		return st.AD.PwdLastSet
	}
	waitFor(t, 30*time.Second, "pwsync to see the three users", func() bool {
		return pwdLastSet(dom) > 0 && pwdLastSet(pso) > 0 && pwdLastSet(soon) > 0
	})
	if n := len(readActions(t, conn.JS)); n != 0 {
		t.Fatalf("%d actions for fresh passwords, want none", n)
	}

	aged := time.Now()
	domSet := s.dc.AgePassword(t, dom, 50*day, "")
	psoSet := s.dc.AgePassword(t, pso, 25*day, "")
	soonSet := s.dc.AgePassword(t, soon, 39*day+time.Hour, "")

	// Samba's own verdict, before pwsync's
	expiry := func(u adtest.User) (time.Time, string) {
		e := s.dc.Read(t, u.DN, "msDS-UserPasswordExpiryTimeComputed", "msDS-ResultantPSO")
		var ft int64
		fmt.Sscan(e.GetAttributeValue("msDS-UserPasswordExpiryTimeComputed"), &ft)
		return events.FileTime(ft), e.GetAttributeValue("msDS-ResultantPSO")
	}
	now := time.Now()
	for _, c := range []struct {
		u      adtest.User
		set    time.Time
		maxAge time.Duration
		pso    string
	}{{dom, domSet, 42 * day, ""}, {pso, psoSet, 20 * day, psoDN}, {soon, soonSet, 42 * day, ""}} {
		exp, resultant := expiry(c.u)
		if !exp.Equal(c.set.Add(c.maxAge)) || !strings.EqualFold(resultant, c.pso) {
			t.Fatalf("%s: Samba's expiry %s (PSO %q), want pwdLastSet %s + %s (PSO %q)", c.u.SAM, exp, resultant, c.set, c.maxAge, c.pso)
		}
		if c.u == soon {
			if left := exp.Sub(now); left < 3*day-2*time.Hour || left > 3*day {
				t.Fatalf("%s expires in %s, want just under 3 days", c.u.SAM, left)
			}
		} else if !exp.Before(now) {
			t.Fatalf("%s: msDS-UserPasswordExpiryTimeComputed %s is not in the past", c.u.SAM, exp)
		}
	}

	want := map[string]bool{
		"require_password_change/" + dom.UPN: true, notice(dom, 0): true,
		"require_password_change/" + pso.UPN: true, notice(pso, 0): true,
		notice(soon, 3): true,
	}
	got := s.waitActions(t, want)
	seen := map[string]int{}
	for _, a := range got {
		if seen[a.ID]++; seen[a.ID] > 1 {
			t.Errorf("action %s decided twice", a.ID)
		}
		if a.DryRun {
			t.Errorf("action %s is a dry run", a.ID)
		}
	}
	s.waitWrites(t, domID, cloudResetWrites, 0)
	s.waitWrites(t, psoID, []string{"POST revoke 200", "POST members 204"}, 0)
	t.Logf("aged at %s; both enforced %s later", aged.Format(time.RFC3339), time.Since(aged).Round(time.Millisecond))
	s.waitMails(t, []string{dom.UPN + ": Your password has expired", pso.UPN + ": Your password has expired",
		soon.UPN + ": Your password expires in 3 days"})
	time.Sleep(2 * time.Second) // a second enforcement would show by now
	s.waitWrites(t, domID, cloudResetWrites, 0)
	s.waitWrites(t, psoID, []string{"POST revoke 200", "POST members 204"}, 0)
	if w := s.writes(soonID); len(w) != 0 {
		t.Errorf("soon written before expiry: %v", w)
	}

	// the audit trail: each notice decision once, the superseded lead days skipped
	for _, c := range []struct {
		u          adtest.User
		act, skips []string
	}{
		{dom, []string{"password expired 0 day(s) ago"}, []string{"lead day 14", "lead day 7", "lead day 3", "lead day 1"}},
		{pso, []string{"password expired 0 day(s) ago"}, []string{"lead day 14", "lead day 7", "lead day 3", "lead day 1"}},
		{soon, []string{"password expires in 3 day(s)"}, []string{"lead day 14", "lead day 7"}},
	} {
		recs, err := audit.Last(ctx, conn.JS, audit.Query{User: c.u.GUID, Kinds: []string{"decision"}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var acts, skips []string
		for _, r := range recs {
			if r.Rule != "expiry-notice" {
				continue
			}
			detail, _, _ := strings.Cut(r.Detail, ",")
			if r.Outcome == "act" {
				acts = append(acts, detail)
			} else {
				skips = append(skips, strings.TrimSuffix(detail, " passed while a later one is already due"))
			}
		}
		if fmt.Sprint(acts) != fmt.Sprint(c.act) || fmt.Sprint(skips) != fmt.Sprint(c.skips) {
			t.Errorf("%s: notice decisions act %q skip %q, want act %q skip %q", c.u.SAM, acts, skips, c.act, c.skips)
		}
	}

	// policy explain tells the same story, from the state and the notifier's ledger
	explain := func(u adtest.User) string {
		var b bytes.Buffer
		if err := dispatch(ctx, []string{"policy", "explain", "--config", s.cfgPath, u.UPN}, &b, &b); err != nil {
			t.Fatalf("policy explain %s: %v\n%s", u.UPN, err, b.String())
		}
		return b.String()
	}
	for _, c := range []struct {
		u    adtest.User
		want []string
	}{
		{dom, []string{"Entra account " + domID, "14d before", "[skipped: a later lead day was due at the same time",
			"notice expired + require a password change in the cloud  [sent by email at", "from " + noticeSender + "; enforced]",
			"Next: nothing more for this password", "Delivery: email to ", "notify time zone UTC (notify.default_time_zone); quiet hours none",
			"Cloud: a password change is required (by expiry."}},
		{pso, []string{"(PSO " + strings.TrimPrefix(strings.SplitN(psoDN, ",", 2)[0], "CN=") + ")", "[sent by email at"}},
		{soon, []string{"7d before", "[skipped: a later lead day was due at the same time", "3d before", "[sent by email at",
			"Next: 1d before at", "minus 1 x 24h, in 4", "Cloud: nothing pending"}},
	} {
		out := explain(c.u)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("policy explain %s lacks %q:\n%s", c.u.SAM, w, out)
			}
		}
	}
}

// mailbox gives a cloud user a mail address (its UPN) and a preferredLanguage.
func (s *stack) mailbox(cloudID, lang string) {
	u, ok := s.sim.User(cloudID)
	if !ok {
		panic("no cloud user " + cloudID)
	}
	u.Mail, u.PreferredLanguage = u.UserPrincipalName, lang
	s.sim.PutUser(u)
}

// waitMails waits until the simulator's sent mail is exactly want ("to:
// subject", in any order, each once), from the notice sender, and stays so.
func (s *stack) waitMails(t *testing.T, want []string) {
	t.Helper()
	key := func(m graphsim.Mail) string { return strings.Join(m.To, ",") + ": " + m.Subject }
	var got []string
	deadline, settled := time.Now().Add(30*time.Second), time.Time{}
	for ; ; time.Sleep(100 * time.Millisecond) {
		got = got[:0]
		for _, m := range s.sim.SentMail() {
			if m.From != noticeSender || m.Headers["x-pwsync-notice"] == "" {
				t.Fatalf("mail from %s without the notice header: %+v", m.From, m)
			}
			got = append(got, key(m))
		}
		slices.Sort(got)
		w := slices.Sorted(slices.Values(want))
		switch {
		case !slices.Equal(got, w):
			settled = time.Time{}
		case settled.IsZero():
			settled = time.Now()
		case time.Since(settled) > 300*time.Millisecond: // a redelivered duplicate would show by now; one after a restart shows in the next phase
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sent mail:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(w, "\n  "))
		}
	}
}

func notice(u adtest.User, lead int) string { return fmt.Sprintf("notify/%s/%d", u.UPN, lead) }

func actionKey(a events.Action) string {
	if a.Notice != nil {
		return fmt.Sprintf("notify/%s/%d", a.User.UPN, a.Notice.LeadDays)
	}
	return string(a.Kind) + "/" + a.User.UPN
}

func find(as []events.Action, key string) *events.Action {
	for i := range as {
		if actionKey(as[i]) == key {
			return &as[i]
		}
	}
	return nil
}

// startExpiry runs pwsync in process until the returned stop is called.
func (s *stack) startExpiry(t *testing.T) (stop func()) {
	t.Helper()
	s.writeConfig(t)
	cfg, _, err := config.Load(s.cfgPath, config.AllTargets, os.Getenv)
	if err != nil {
		t.Fatalf("loading config: %v", err)
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "pwsync.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logx.New(logFile, cfg.Log.Level, "json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, config.AllTargets, log) }()
	s.waitReady(t, done)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pwsync run: %v", err)
		}
		logFile.Close()
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			s.dumpLog(t)
		}
	})
	return stop
}

// waitActions waits until the ACTIONS stream holds exactly the wanted
// actions of this test's users (by actionKey), and returns them.
func (s *stack) waitActions(t *testing.T, want map[string]bool) []events.Action {
	t.Helper()
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: "nats://" + s.opts.NATSListen, Name: t.Name()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := readActions(t, conn.JS)
		keys := map[string]bool{}
		for _, a := range got {
			keys[actionKey(a)] = true
		}
		missing := 0
		for k := range want {
			if !keys[k] {
				missing++
			}
		}
		if missing == 0 {
			time.Sleep(time.Second) // anything extra would show by now
			got = readActions(t, conn.JS)
			for _, a := range got {
				if !want[actionKey(a)] {
					t.Fatalf("unexpected action %s (%s)", actionKey(a), a.ID)
				}
			}
			return got
		}
		if time.Now().After(deadline) {
			var have []string
			for k := range keys {
				have = append(have, k)
			}
			t.Fatalf("actions %v, want %v", have, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readActions(t *testing.T, js jetstream.JetStream) []events.Action {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, natsx.StreamActions, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Action
	for n := int(info.NumPending); n > 0; {
		batch, err := c.FetchNoWait(n)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var a events.Action
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
			n--
		}
	}
	return out
}
