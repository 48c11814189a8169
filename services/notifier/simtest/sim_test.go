package simtest

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/notifier"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/graphsim"
	"github.com/pwsync/pwsync/shared/natstest"
	"github.com/pwsync/pwsync/shared/natsx"
)

const secret = "sim-secret"

// limits are the simulator's (and the notifier's) limits, time-scaled.
type limits struct {
	mailPerWindow  int
	mailWindow     time.Duration
	teamsPerWindow int
	teamsWindow    time.Duration
}

type env struct {
	sim     *graphsim.Server
	client  *msgraph.Client
	conn    *natsx.Conn
	senders []string
}

func newEnv(t testing.TB, l limits, senders int) *env {
	t.Helper()
	sim, err := graphsim.Start(graphsim.Options{ClientSecret: secret, WriteBudget: -1,
		MailPerMinute: l.mailPerWindow, MailWindow: l.mailWindow,
		ActivityPerSecond: l.teamsPerWindow, ActivityWindow: l.teamsWindow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCAFile(ca); err != nil {
		t.Fatal(err)
	}
	client, err := msgraph.New(msgraph.Config{TenantID: sim.TenantID(), ClientID: sim.ClientID(), ClientSecret: secret,
		AuthorityHost: sim.AuthorityHost(), GraphBaseURL: sim.GraphBaseURL(), CAFile: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	e := &env{sim: sim, client: client}
	for i := range senders {
		upn := fmt.Sprintf("noreply%d@contoso.com", i+1)
		sim.PutUser(graphsim.User{ID: fmt.Sprintf("sender-%d", i+1), UserPrincipalName: upn, Mail: upn, AccountEnabled: true})
		e.senders = append(e.senders, upn)
	}
	_, e.conn = natstest.Run(t)
	return e
}

// users adds n users; every noTeamsEvery-th has no Teams app (0: all have it).
func (e *env) users(n, noTeamsEvery int, lang string) []graphsim.User {
	var out []graphsim.User
	for i := range n {
		upn := fmt.Sprintf("user%05d@contoso.com", i)
		u := graphsim.User{ID: fmt.Sprintf("u-%05d", i), UserPrincipalName: upn, Mail: upn, DisplayName: fmt.Sprintf("User %d", i),
			AccountEnabled: true, PreferredLanguage: lang}
		e.sim.PutUser(u)
		if noTeamsEvery > 0 && i%noTeamsEvery == 0 {
			e.sim.SetTeamsAppInstalled(u.ID, false)
		}
		out = append(out, u)
	}
	return out
}

func (e *env) settings(l limits, teams bool) config.Notify {
	s := config.Default().Notify
	s.Enabled, s.Senders, s.Teams.Enabled = true, e.senders, teams
	s.Concurrency = 16
	s.Pacing = config.Pacing{MailPerWindow: l.mailPerWindow, MailWindow: l.mailWindow,
		TeamsPerWindow: l.teamsPerWindow, TeamsWindow: l.teamsWindow}
	return s
}

func (e *env) notifier(t testing.TB, set config.Notify, holder string) *notifier.Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := notifier.New(ctx, notifier.Deps{JS: e.conn.JS, Graph: e.client, Messenger: e.client, Settings: set,
		Holder: holder, Log: zerolog.Nop(), MaxWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publish puts one expiry warning per user on the ACTIONS stream, each
// decided twice (two events): the ledger must send it once.
func (e *env) publish(t testing.TB, users []graphsim.User, twice bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := natsx.NewPublisher(e.conn.JS)
	setAt := time.Now().Add(-80 * 24 * time.Hour).Truncate(time.Second)
	for _, u := range users {
		ref := events.UserRef{ObjectGUID: "guid-" + u.ID, UPN: u.UserPrincipalName, CloudID: u.ID}
		for k := range map[bool]int{false: 1, true: 2}[twice] {
			ev := fmt.Sprintf("ev-%s-%d", u.ID, k)
			a := events.Action{ID: events.ActionID("expiry_notice", ref, ev), Kind: events.ActionNotify, Rule: "expiry_notice",
				EventID: ev, User: ref, Notice: &events.Notice{Template: events.NoticeExpiryWarning, LeadDays: 7,
					PasswordSetAt: setAt, Expiry: time.Now().Add(7 * 24 * time.Hour)}}
			if _, err := pub.PublishJSON(ctx, a.Subject(), a.ID, a); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// run starts replicas notifiers and returns a stop function.
func (e *env) run(t testing.TB, set config.Notify, replicas int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range replicas {
		s := e.notifier(t, set, fmt.Sprintf("replica-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil {
				t.Errorf("notifier %d: %v", i, err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func (e *env) delivered() int { return len(e.sim.SentMail()) + len(e.sim.ActivityNotifications()) }

func (e *env) waitDelivered(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for e.delivered() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d notices delivered after %s", e.delivered(), n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// maxInWindow is the largest number of times within any window (per key).
func maxInWindow(times map[string][]time.Time, window time.Duration) int {
	best := 0
	for _, ts := range times {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		j := 0
		for i := range ts {
			for !ts[j].Add(window).After(ts[i]) {
				j++
			}
			best = max(best, i-j+1)
		}
	}
	return best
}

// TestPacingUnderLimitsWithTwoReplicas: 2 replicas, 3 senders, Teams for
// most users and email for those without the Teams app. The simulator
// refuses (and counts) anything over its limits: zero refusals, each user
// notified exactly once, the 403 users by email.
func TestPacingUnderLimitsWithTwoReplicas(t *testing.T) {
	l := limits{mailPerWindow: 30, mailWindow: 500 * time.Millisecond, teamsPerWindow: 5, teamsWindow: 100 * time.Millisecond}
	e := newEnv(t, l, 3)
	users := e.users(240, 3, "fr-FR") // 80 without the Teams app
	e.publish(t, users, true)
	stop := e.run(t, e.settings(l, true), 2)
	e.waitDelivered(t, len(users), 45*time.Second)
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	stop()

	st := e.sim.Stats()
	if st.MailThrottled != 0 || st.ActivityThrottled != 0 {
		t.Fatalf("limit violations: mail %d, Teams %d", st.MailThrottled, st.ActivityThrottled)
	}
	mails, acts := e.sim.SentMail(), e.sim.ActivityNotifications()
	got := map[string]int{}
	perSender := map[string][]time.Time{}
	for _, m := range mails {
		got[strings.ToLower(m.To[0])]++
		perSender[m.From] = append(perSender[m.From], m.Time)
		if !strings.HasPrefix(m.Subject, "Votre mot de passe expire") {
			t.Fatalf("subject %q: want the user's language (fr)", m.Subject)
		}
	}
	teams := map[string][]time.Time{}
	for _, a := range acts {
		got[a.UserID]++
		teams["app"] = append(teams["app"], a.Time)
	}
	for i, u := range users {
		key := u.ID
		if i%3 == 0 {
			key = u.UserPrincipalName // no Teams app: by email
		}
		if got[key] != 1 {
			t.Fatalf("%s notified %d times (mails %d, activities %d)", key, got[key], len(mails), len(acts))
		}
	}
	if len(mails) != 80 || len(acts) != 160 || len(perSender) != 3 {
		t.Fatalf("%d mails from %d senders, %d activities", len(mails), len(perSender), len(acts))
	}
	if m := maxInWindow(perSender, l.mailWindow); m > l.mailPerWindow {
		t.Fatalf("%d mails in one window from one sender", m)
	}
	if m := maxInWindow(teams, l.teamsWindow); m > l.teamsPerWindow {
		t.Fatalf("%d activities in one window", m)
	}
}
