package notifier

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestNotifyMetrics: sends, deferrals and failures are counted by channel,
// and every slot taken observes its pacing wait. The collectors are the
// process's, so the test compares before and after.
func TestNotifyMetrics(t *testing.T) {
	_, conn := natstest.Run(t)
	ctx := ctxT(t)
	count := func(channel, outcome string) float64 {
		return testutil.ToFloat64(metrics.Notifications.WithLabelValues(channel, outcome))
	}
	waits := func(channel string) uint64 {
		var m dto.Metric
		if err := metrics.NotifyPacingWait.WithLabelValues(channel).(prometheus.Histogram).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	type snap struct{ emailSent, emailDeferred, teamsFailed, teamsDeferred, emailWaits float64 }
	take := func() snap {
		return snap{count("email", "sent"), count("email", "deferred"), count("teams", "failed"), count("teams", "deferred"), float64(waits("email"))}
	}
	before := take()

	m := &fakeMessenger{noApp: map[string]bool{"c-bob": true}}
	set := settings()
	set.Senders = set.Senders[:1]
	set.Teams.Enabled = true
	set.Pacing.MailPerWindow, set.Pacing.MailWindow = 1, time.Hour // the second mail has no slot within the budget
	set.DefaultTimeZone = "UTC"
	set.QuietHours = config.QuietHours{Start: "22:00", End: "06:00"}
	clk := &fixedClock{t: noon}
	s := newNotifier(t, conn.JS, newFakeGraph(ann, bob), m, set, clk.Now)

	// bob: Teams refuses (app not installed) -> email sent
	if err := s.Handle(ctx, notifyAction(bob, events.NoticeExpiryWarning, 7, "m1"), natsx.Meta{}); err != nil {
		t.Fatal(err)
	}
	// bob's next notice: Teams refuses again, the mailbox's window is full -> deferred
	var later *natsx.RetryLater
	if err := s.Handle(ctx, notifyAction(bob, events.NoticeExpiryWarning, 3, "m2"), natsx.Meta{}); !errors.As(err, &later) {
		t.Fatalf("full window: %v, want a later retry", err)
	}
	// ann at night: quiet hours -> deferred, on Teams (her channel)
	clk.Set(time.Date(2026, 3, 10, 23, 0, 0, 0, time.UTC))
	if err := s.Handle(ctx, notifyAction(ann, events.NoticeExpiryWarning, 7, "m3"), natsx.Meta{}); !errors.As(err, &later) {
		t.Fatalf("quiet hours: %v, want a later retry", err)
	}

	after := take()
	want := snap{emailSent: 1, emailDeferred: 1, teamsFailed: 2, teamsDeferred: 1, emailWaits: 1}
	got := snap{after.emailSent - before.emailSent, after.emailDeferred - before.emailDeferred,
		after.teamsFailed - before.teamsFailed, after.teamsDeferred - before.teamsDeferred, after.emailWaits - before.emailWaits}
	if got != want {
		t.Fatalf("metric deltas %+v, want %+v", got, want)
	}
}
