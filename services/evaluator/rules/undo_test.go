package rules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

// TestUndoWaitsForTheCloud: the undo of a forced change ends when the cloud
// has the new password, not when AD does.
func TestUndoWaitsForTheCloud(t *testing.T) {
	newPwd := at.Add(10 * time.Minute) // the user's new AD password
	synced := func(c *events.CloudUser) { c.SyncEnabled = true }
	managed := func(c *events.CloudUser) { c.SyncEnabled = false }
	changedAt := func(d time.Time) func(*events.CloudUser) {
		return func(c *events.CloudUser) { c.LastPasswordChange = d }
	}
	// every sequence: cloud state known, AD reset (must change), then the
	// user sets a new password in AD at newPwd
	start := func(kind func(*events.CloudUser)) []step {
		return []step{cloudStep(cloud("None", kind), 0), adStep(user(10, setTime), time.Second),
			adStep(user(11, 0), time.Minute), adStep(user(12, events.ToFileTime(newPwd)), 10*time.Minute)}
	}
	pre := []string{"-", "-", "require_password_change", "-"}
	tests := []struct {
		name   string
		policy func(*Policy)
		steps  []step
		want   []string
		// waiting: the sequence ends with the undo still waiting
		waiting bool
	}{
		{"synced_block_ends_when_hash_sync_arrives", nil,
			append(start(synced), cloudStep(cloud("None", synced, changedAt(newPwd.Add(-2*time.Second))), 12*time.Minute),
				step{timer: true, after: 16 * time.Minute}),
			append(pre, "clear_password_change", "-"), false},
		{"synced_earlier_cloud_change_is_not_the_new_password", nil,
			append(start(synced), cloudStep(cloud("None", synced, changedAt(at.Add(5*time.Minute))), 11*time.Minute)),
			append(pre, "-"), true},
		{"synced_bound_lifts_and_alerts", nil,
			append(start(synced), step{timer: true, after: 16 * time.Minute}),
			append(pre, "clear_password_change,alert"), false},
		{"synced_no_wait_when_await_cloud_is_0", func(p *Policy) { p.Undo.AwaitCloud = 0 },
			start(synced), []string{"-", "-", "require_password_change", "clear_password_change"}, false},
		{"cloud_managed_flag_stays_until_cloud_change", nil,
			append(start(managed), cloudStep(cloud("None", managed, changedAt(at.Add(20*time.Minute))), 20*time.Minute)),
			append(pre, "clear_password_change"), false},
		{"cloud_managed_option_clears_at_ad_change", func(p *Policy) { p.Undo.ClearOnADChange = true },
			start(managed), []string{"-", "-", "require_password_change", "clear_password_change"}, false},
		{"new_reset_while_waiting_ends_the_wait", nil,
			append(start(synced), adStep(user(13, 0), 11*time.Minute), step{timer: true, after: 16 * time.Minute},
				cloudStep(cloud("None", synced, changedAt(newPwd)), 17*time.Minute)),
			append(pre, "require_password_change", "-", "-"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := cloudPolicy()
			p.Cloud.WritebackWindow = 0
			p.Undo = UndoPolicy{AwaitCloud: 5 * time.Minute}
			if tt.policy != nil {
				tt.policy(&p)
			}
			var s State
			var got []string
			var timers []events.Timer
			for i, st := range tt.steps {
				ev := events.Envelope{ID: fmt.Sprintf("ev%d", i), Time: at.Add(st.after)}
				var res Result
				switch {
				case st.ad != nil:
					res = EvaluateAD(p, s, ev, *st.ad)
				case st.cloud != nil:
					res = EvaluateCloud(p, s, ev, *st.cloud)
				case st.timer:
					if len(timers) == 0 {
						got = append(got, "no-timer")
						continue
					}
					res = EvaluateUndoBound(p, s, ev, timers[len(timers)-1])
				}
				timers = append(timers, res.Timers...)
				if res.Changed {
					s = res.State
				}
				var ks []string
				for _, a := range res.Actions {
					ks = append(ks, string(a.Kind))
					if a.Kind == events.ActionClearChange && a.Undoes == "" {
						t.Errorf("step %d: undo without the action it undoes: %+v", i, a)
					}
				}
				if len(ks) == 0 {
					ks = []string{"-"}
				}
				got = append(got, strings.Join(ks, ","))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("actions per step = %v, want %v", got, tt.want)
			}
			if (s.UndoAwait != nil) != tt.waiting {
				t.Errorf("waiting at the end = %+v, want %v", s.UndoAwait, tt.waiting)
			}
		})
	}
}

// TestUndoGateWithoutCloudState: with no cloud state (Graph side off) the
// undo is decided at once and the actuator checks the cloud.
func TestUndoGateWithoutCloudState(t *testing.T) {
	p := policy()
	p.Undo = UndoPolicy{AwaitCloud: 5 * time.Minute}
	var s State
	for i, u := range []events.ADUser{user(10, setTime), user(11, 0), user(12, setTime+1)} {
		res := EvaluateAD(p, s, events.Envelope{ID: fmt.Sprint("ev", i), Time: at.Add(time.Duration(i) * time.Minute)}, u)
		s = res.State
		if i < 2 {
			continue
		}
		if len(res.Actions) != 1 || res.Actions[0].AwaitCloud == nil {
			t.Fatalf("want one gated undo, got %+v", res.Actions)
		}
		g := res.Actions[0].AwaitCloud
		if !g.ADPasswordSet.Equal(events.FileTime(setTime+1)) || !g.Until.Equal(at.Add(7*time.Minute)) || !g.RequiredAt.Equal(at.Add(time.Minute)) ||
			!g.UserChangeFrom.Equal(at.Add(time.Minute+ownWriteMargin+cloudSkew)) {
			t.Errorf("gate = %+v", *g)
		}
	}
}
