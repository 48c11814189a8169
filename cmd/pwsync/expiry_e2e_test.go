package main

import (
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

	"github.com/pwsync/pwsync/shared/adtest"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graphsim"
	"github.com/pwsync/pwsync/shared/logx"
	"github.com/pwsync/pwsync/shared/natsx"
)

// TestExpiryEndToEnd: real Samba AD, the simulator, pwsync in process with
// its clock moved forward (AD refuses a past pwdLastSet, so the password
// "ages" by moving pwsync's clock instead). alice is under the domain's
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
	s.waitWrites(t, bobID, []string{"PATCH force=true 204"}, time.Second)
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
