package notifier

import (
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestLedgerExpiryMoved: the 7-day notice went out; then a PSO moved the
// expiry of the same password and the evaluator decided the 7-day notice
// again. A move of days tells the user the new date; a move of hours (a
// recomputation) is the same notice and is not sent twice.
func TestLedgerExpiryMoved(t *testing.T) {
	for _, tc := range []struct {
		name      string
		move      time.Duration
		wantMails int
	}{
		{"earlier_by_three_days", -3 * 24 * time.Hour, 2},
		{"later_by_a_week", 7 * 24 * time.Hour, 2},
		{"earlier_by_two_hours", -2 * time.Hour, 1},
		{"unchanged", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Run(t)
			m := &fakeMessenger{}
			s := newNotifier(t, conn.JS, newFakeGraph(bob), m, settings(), func() time.Time { return noon })
			first := notifyAction(bob, events.NoticeExpiryWarning, 7, "e1")
			first.Notice.Expiry = noon.Add(10 * 24 * time.Hour)
			moved := notifyAction(bob, events.NoticeExpiryWarning, 7, "e2")
			moved.Notice.Expiry = first.Notice.Expiry.Add(tc.move)
			for _, a := range []events.Action{first, moved, moved} { // the second one redelivered too
				if err := s.Handle(ctxT(t), a, natsx.Meta{}); err != nil {
					t.Fatal(err)
				}
			}
			if len(m.mails) != tc.wantMails {
				t.Fatalf("%d mails, want %d", len(m.mails), tc.wantMails)
			}
			if tc.wantMails == 2 {
				date := moved.Notice.Expiry.Format("2006-01-02")
				if last := m.mails[1].Mail; !strings.Contains(last.Text, date) {
					t.Errorf("second notice does not tell the new date %s:\n%s", date, last.Text)
				}
			}
		})
	}
}
