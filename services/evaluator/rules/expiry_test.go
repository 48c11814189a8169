package rules

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// t0 is when the test user's password was set; the domain's 42 days make
// it expire at exp0.
var (
	t0   = time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC)
	exp0 = t0.Add(42 * Day)
)

func expiryPolicy() Policy {
	p := policy()
	p.IncludeGroups = []string{"CN=Pilot,OU=Groups,DC=example,DC=test"}
	p.Expiry = ExpiryPolicy{Enabled: true, LeadDays: []int{7, 14, 1, 3, 0, -1}, Notify: true, Enforce: true, MaxLate: 36 * time.Hour}
	p.ResetNotice = true
	return p
}

// aged is an AD user whose password was set at set and expires at exp.
func aged(usn int64, set, exp time.Time, mods ...func(*events.ADUser)) events.ADUser {
	u := user(usn, events.ToFileTime(set))
	u.DisplayName, u.Language = "Alice Example", "de-DE"
	u.ExpiryComputed, u.Expiry, u.ExpirySource, u.PolicyName = events.ToFileTime(exp), events.ToFileTime(exp), events.ExpirySourceComputed, "domain"
	for _, m := range mods {
		m(&u)
	}
	return u
}

// xstep is one thing that happens to the user: a new AD state, or time
// passing to at (the scheduler fires whatever is due then).
type xstep struct {
	at  time.Time
	ad  *events.ADUser
	dry *bool // pwsync restarted with dry_run set to this
}

func xad(at time.Time, u events.ADUser) xstep { return xstep{at: at, ad: &u} }
func tick(at time.Time) xstep                 { return xstep{at: at} }
func dryRun(at time.Time, on bool) xstep      { return xstep{at: at, dry: &on} }

// TestExpiryGolden runs user histories through the rules the way the
// evaluator and scheduler do, with the clock passed in, and compares the
// trace with testdata/expiry.golden (go test -run TestExpiryGolden -update
// rewrites it; review the diff).
func TestExpiryGolden(t *testing.T) {
	inOU := func(u *events.ADUser) {}
	pilotNested := func(u *events.ADUser) {
		u.DN = "CN=Alice,OU=Elsewhere,DC=example,DC=test"
		u.Groups = []string{"CN=Pilot,OU=Groups,DC=example,DC=test"}
	}
	breakGlassNested := func(u *events.ADUser) { u.Groups = []string{bgGroup} }
	pso := func(u *events.ADUser) {
		u.ResultantPSO, u.PolicyName = "CN=Short,CN=Password Settings Container,CN=System,DC=example,DC=test", "Short"
	}
	fallback := func(u *events.ADUser) { u.ExpiryComputed, u.ExpirySource = 0, events.ExpirySourcePSO }
	scenarios := []struct {
		name   string
		policy func(*Policy)
		steps  []xstep
	}{
		{"every_lead_day_on_time_then_enforced", nil, []xstep{
			xad(t0, aged(10, t0, exp0, inOU)),
			tick(exp0.Add(-15 * Day)), tick(exp0.Add(-14 * Day)), tick(exp0.Add(-14*Day + time.Hour)),
			tick(exp0.Add(-7 * Day)), tick(exp0.Add(-3 * Day)), tick(exp0.Add(-1 * Day)),
			tick(exp0), tick(exp0.Add(Day)), tick(exp0.Add(30 * Day)),
		}},
		{"downtime_sends_only_the_latest_due_notice", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(-2 * Day)),
		}},
		{"downtime_past_expiry_enforces_but_does_not_send_stale_notices", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(5 * Day)),
		}},
		{"password_changed_after_enforcement_undoes_and_starts_a_new_schedule", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(time.Hour)),
			xad(exp0.Add(2*time.Hour), aged(11, exp0.Add(2*time.Hour), exp0.Add(2*time.Hour+42*Day))),
			tick(exp0.Add(2*time.Hour + 28*Day)),
		}},
		{"pso_applied_moves_expiry_earlier", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(t0.Add(20 * Day)),
			xad(t0.Add(20*Day+time.Minute), aged(10, t0, t0.Add(30*Day), pso, func(u *events.ADUser) { u.PolicyRev = 7 })),
			tick(t0.Add(20*Day + 2*time.Minute)),
			tick(t0.Add(23 * Day)),
		}},
		{"fallback_expiry_from_pso_max_age", nil, []xstep{
			xad(t0, aged(10, t0, t0.Add(30*Day), pso, fallback)),
			tick(t0.Add(30 * Day)),
		}},
		{"must_change_before_expiry_cancels_the_schedule", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			xad(exp0.Add(-time.Hour), aged(11, time.Time{}, time.Time{}, func(u *events.ADUser) { u.PwdLastSet, u.Expiry, u.ExpiryComputed = 0, 0, 0 })),
			tick(exp0.Add(time.Hour)),
		}},
		{"forced_change_sends_a_reset_notice", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			xad(t0.Add(Day), aged(11, time.Time{}, time.Time{}, func(u *events.ADUser) { u.PwdLastSet, u.Expiry, u.ExpiryComputed = 0, 0, 0 })),
		}},
		{"reset_notice_off", func(p *Policy) { p.ResetNotice = false }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			xad(t0.Add(Day), aged(11, time.Time{}, time.Time{}, func(u *events.ADUser) { u.PwdLastSet, u.Expiry, u.ExpiryComputed = 0, 0, 0 })),
		}},
		{"nested_pilot_group_member_in_scope", nil, []xstep{
			xad(t0, aged(10, t0, exp0, pilotNested)),
			tick(exp0.Add(-7 * Day)),
		}},
		{"nested_break_glass_never_notified", nil, []xstep{
			xad(t0, aged(10, t0, exp0, breakGlassNested)),
			tick(exp0.Add(Day)),
		}},
		{"never_expires_has_no_schedule", nil, []xstep{
			xad(t0, aged(10, t0, time.Time{}, neverExpires, func(u *events.ADUser) {
				u.Expiry, u.ExpiryComputed = events.FileTimeNeverExpires, events.FileTimeNeverExpires
			})),
			tick(exp0.Add(Day)),
		}},
		{"disabled_ignored", nil, []xstep{
			xad(t0, aged(10, t0, exp0, disabled)),
			tick(exp0.Add(Day)),
		}},
		{"notices_only_no_enforcement", func(p *Policy) { p.Expiry.Enforce = false; p.Expiry.LeadDays = []int{3} }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(-3 * Day)), tick(exp0.Add(Day)),
		}},
		{"enforcement_only_no_notices", func(p *Policy) { p.Expiry.Notify = false }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(-3 * Day)), tick(exp0),
		}},
		{"dry_run_marks_every_action", func(p *Policy) { p.DryRun = true }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(-7 * Day)), tick(exp0),
		}},
		// dry-run "enforced" the expiry and "sent" notices: none of it was
		// done, so going live enforces at once and sends the notice due now;
		// the password change then undoes the real enforcement
		{"dry_run_then_live_enforces_what_dry_run_only_pretended", func(p *Policy) { p.DryRun = true }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(-7 * Day)), tick(exp0.Add(time.Hour)),
			xad(exp0.Add(2*time.Hour), aged(11, t0, exp0, func(u *events.ADUser) { u.Mail = "new@example.test" })),
			dryRun(exp0.Add(3*time.Hour), false),
			xad(exp0.Add(4*time.Hour), aged(12, exp0.Add(4*time.Hour), exp0.Add(4*time.Hour+42*Day))),
		}},
		// a helpdesk reset during dry-run: the dry "require" is not recorded
		// as done, so going live requires the change (the scheduler's timer
		// brings the user up without a new AD event) and the password change
		// after it undoes exactly that
		{"dry_run_forced_change_then_live", func(p *Policy) { p.DryRun = true }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			xad(t0.Add(Day), aged(11, time.Time{}, time.Time{}, func(u *events.ADUser) { u.PwdLastSet, u.Expiry, u.ExpiryComputed = 0, 0, 0 })),
			dryRun(t0.Add(2*Day), false),
			xad(t0.Add(3*Day), aged(12, t0.Add(3*Day), t0.Add(45*Day))),
		}},
		// the user changed the password during dry-run: going live finds
		// nothing to do, and nothing is undone that was never done
		{"dry_run_reset_and_change_then_live_does_nothing", func(p *Policy) { p.DryRun = true }, []xstep{
			xad(t0, aged(10, t0, exp0)),
			xad(t0.Add(Day), aged(11, time.Time{}, time.Time{}, func(u *events.ADUser) { u.PwdLastSet, u.Expiry, u.ExpiryComputed = 0, 0, 0 })),
			xad(t0.Add(Day+time.Hour), aged(12, t0.Add(Day+time.Hour), t0.Add(43*Day+time.Hour))),
			dryRun(t0.Add(2*Day), false),
			xad(t0.Add(3*Day), aged(13, t0.Add(3*Day), t0.Add(45*Day))),
		}},
		// live enforcement, then a dry run during which the user changes the
		// password: going live undoes the real requirement
		{"live_then_dry_run_password_change_then_live_undoes", nil, []xstep{
			xad(t0, aged(10, t0, exp0)),
			tick(exp0.Add(time.Hour)),
			dryRun(exp0.Add(2*time.Hour), true),
			xad(exp0.Add(3*time.Hour), aged(11, exp0.Add(3*time.Hour), exp0.Add(3*time.Hour+42*Day))),
			dryRun(exp0.Add(4*time.Hour), false),
		}},
	}
	var out strings.Builder
	for _, sc := range scenarios {
		p := expiryPolicy()
		if sc.policy != nil {
			sc.policy(&p)
		}
		fmt.Fprintf(&out, "== %s\n", sc.name)
		var s State
		for _, st := range sc.steps {
			if st.dry != nil {
				p.DryRun = *st.dry
				fmt.Fprintf(&out, "%s restart with dry_run=%v\n", st.at.Format(time.RFC3339), p.DryRun)
			} else if st.ad != nil {
				ev := events.Envelope{ID: st.ad.EventID(), Time: st.at}
				res := EvaluateAD(p, s, ev, *st.ad)
				if res.Changed {
					s = res.State
				}
				fmt.Fprintf(&out, "%s ad usn=%d pwdLastSet=%s expiry=%s in_scope=%v\n", st.at.Format(time.RFC3339),
					st.ad.USNChanged, fmtFT(st.ad.PwdLastSet), fmtFT(st.ad.Expiry), s.InScope)
				writeResult(&out, res)
			} else {
				fmt.Fprintf(&out, "%s tick\n", st.at.Format(time.RFC3339))
			}
			// what the scheduler does at this time: fire everything due
			for range 10 {
				tm, ok := NextDue(p, s)
				if !ok {
					why := UserSchedule(p, s).Why
					if why == "" {
						why = "every point of this password handled"
					}
					fmt.Fprintf(&out, "  next: none (%s)\n", why)
					break
				}
				if tm.Due.After(st.at) {
					fmt.Fprintf(&out, "  next: lead %d at %s\n", tm.LeadDays, tm.Due.Format(time.RFC3339))
					break
				}
				ev := events.Envelope{ID: tm.EventID(), Source: events.SourceTimer, Type: events.TypeExpiry, Time: st.at}
				res := EvaluateExpiry(p, s, ev, tm, st.at)
				fmt.Fprintf(&out, "  fire %s\n", tm.EventID())
				writeResult(&out, res)
				if !res.Changed {
					fmt.Fprintf(&out, "  (no state change)\n")
					break
				}
				s = res.State
			}
		}
	}
	golden(t, filepath.Join("testdata", "expiry.golden"), out.String())
}

func writeResult(b *strings.Builder, res Result) {
	for _, d := range res.Decisions {
		fmt.Fprintf(b, "  decision %s %s: %s\n", d.Rule, d.Outcome, d.Reason)
	}
	for _, a := range res.Actions {
		fmt.Fprintf(b, "  action %s id=%s", a.Kind, a.ID)
		if a.Undoes != "" {
			fmt.Fprintf(b, " undoes=%s", a.Undoes)
		}
		if a.DryRun {
			fmt.Fprint(b, " dry_run")
		}
		if n := a.Notice; n != nil {
			fmt.Fprintf(b, " notice=%s lead=%d expiry=%s set=%s lang=%s ledger=%s", n.Template, n.LeadDays,
				fmtTime(n.Expiry), fmtTime(n.PasswordSetAt), n.Language, n.LedgerKey(a.User))
		}
		fmt.Fprintln(b)
	}
}

func fmtFT(ft int64) string {
	switch ft {
	case 0:
		return "0"
	case events.FileTimeNeverExpires:
		return "never"
	}
	return events.FileTime(ft).Format(time.RFC3339)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// golden compares got with the file, or rewrites it under -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("%s differs (run with -update and review the diff):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff shows the first differing lines.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return ""
}

func TestLeadsSortedUnique(t *testing.T) {
	got := ExpiryPolicy{LeadDays: []int{1, 14, -1, 7, 1, 0}}.Leads()
	if fmt.Sprint(got) != "[14 7 1 0 -1]" {
		t.Fatalf("Leads() = %v", got)
	}
}

// TestExpiryTimerRedeliveredDecidesNothing: a second delivery of the same
// timer (or a failover's scheduler firing it again) changes nothing.
func TestExpiryTimerRedeliveredDecidesNothing(t *testing.T) {
	p := expiryPolicy()
	s := EvaluateAD(p, State{}, events.Envelope{ID: "e1", Time: t0}, aged(10, t0, exp0)).State
	tm, ok := NextDue(p, s)
	if !ok || tm.LeadDays != 14 {
		t.Fatalf("NextDue = %+v %v", tm, ok)
	}
	now := tm.Due.Add(time.Minute)
	ev := events.Envelope{ID: tm.EventID(), Time: now}
	first := EvaluateExpiry(p, s, ev, tm, now)
	if len(first.Actions) != 1 || first.Actions[0].Notice == nil || first.Actions[0].Notice.LeadDays != 14 {
		t.Fatalf("first delivery actions = %+v", first.Actions)
	}
	again := EvaluateExpiry(p, first.State, ev, tm, now)
	if len(again.Actions) != 0 || again.Changed {
		t.Fatalf("second delivery decided %+v (changed %v)", again.Actions, again.Changed)
	}
	// The same timer against the state before (a crash before the state
	// was saved) decides the same action ID: JetStream drops the repeat.
	replay := EvaluateExpiry(p, s, ev, tm, now.Add(time.Minute))
	if len(replay.Actions) != 1 || replay.Actions[0].ID != first.Actions[0].ID {
		t.Fatalf("replay actions = %+v, want ID %s", replay.Actions, first.Actions[0].ID)
	}
}

// TestExpiryMovedRenotifiesSameLeadDay: the user had the 7-day notice; then
// a PSO moves the expiry of the same password. The schedule restarts and
// the lead day due now is notified again with the new date, under a ledger
// key of its own, unless the move is below a day (a recomputation, not a
// policy change), when the notifier's ledger suppresses it as a repeat.
func TestExpiryMovedRenotifiesSameLeadDay(t *testing.T) {
	p := expiryPolicy()
	p.Expiry.LeadDays = []int{7, 1}
	for _, tc := range []struct {
		name      string
		move      time.Duration
		wantLead  int
		wantNewKy bool
	}{
		{"earlier_by_two_days", -2 * Day, 7, true},
		{"later_by_five_days", 5 * Day, 7, true},
		{"earlier_by_two_hours", -2 * time.Hour, 7, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			res := EvaluateAD(p, s, events.Envelope{ID: "ad1", Time: t0}, aged(10, t0, exp0))
			s = res.State
			first := fireDue(t, p, &s, exp0.Add(-7*Day))
			if len(first) != 1 || first[0].Notice.LeadDays != 7 {
				t.Fatalf("first notices = %+v, want the 7-day one", first)
			}
			// the PSO applies an hour later (still the 7-day window of both dates
			// when the expiry moved later; past the new 7-day point when earlier)
			at := exp0.Add(-7*Day + time.Hour)
			moved := aged(10, t0, exp0.Add(tc.move), func(u *events.ADUser) { u.PolicyRev = 2 })
			res = EvaluateAD(p, s, events.Envelope{ID: "ad2", Time: at}, moved)
			if res.Changed {
				s = res.State
			}
			if tc.move > 0 {
				at = exp0.Add(tc.move - 7*Day) // the later date's 7-day point
			}
			second := fireDue(t, p, &s, at)
			if len(second) != 1 || second[0].Notice.LeadDays != tc.wantLead {
				t.Fatalf("notices after the move = %+v, want lead %d", second, tc.wantLead)
			}
			if !second[0].Notice.Expiry.Equal(exp0.Add(tc.move)) {
				t.Errorf("notice tells expiry %s, want the new %s", second[0].Notice.Expiry, exp0.Add(tc.move))
			}
			k1, k2 := first[0].Notice.LedgerKey(first[0].User), second[0].Notice.LedgerKey(second[0].User)
			if (k1 != k2) != tc.wantNewKy {
				t.Errorf("ledger keys %q and %q: new key %v, want %v", k1, k2, k1 != k2, tc.wantNewKy)
			}
		})
	}
}

// fireDue does what the scheduler does at now: fire every due point.
func fireDue(t *testing.T, p Policy, s *State, now time.Time) []events.Action {
	t.Helper()
	var out []events.Action
	for range 10 {
		tm, ok := NextDue(p, *s)
		if !ok || tm.Due.After(now) {
			return out
		}
		res := EvaluateExpiry(p, *s, events.Envelope{ID: tm.EventID(), Source: events.SourceTimer, Type: events.TypeExpiry, Time: now}, tm, now)
		if !res.Changed {
			return out
		}
		*s = res.State
		for _, a := range res.Actions {
			if a.Notice != nil {
				out = append(out, a)
			}
		}
	}
	t.Fatal("scheduler loop did not settle")
	return nil
}
