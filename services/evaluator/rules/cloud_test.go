package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
)

func cloudPolicy() Policy {
	p := policy()
	p.Cloud = CloudPolicy{NeverExpires: true, DriftCooldown: time.Hour, PendingTimeout: 5 * time.Minute, WritebackWindow: 10 * time.Minute}
	return p
}

func cloud(policies string, mods ...func(*events.CloudUser)) events.CloudUser {
	c := events.CloudUser{ID: "cloud-alice", UPN: "alice@example.test", ImmutableID: "imm", SyncEnabled: true,
		AccountEnabled: true, PasswordPolicies: policies, LastPasswordChange: at.Add(-24 * time.Hour)}
	for _, m := range mods {
		m(&c)
	}
	return c
}

// deltaProps are the properties pwsync selects in delta (graph.DeltaSelect, less id).
var deltaProps = []string{"userPrincipalName", "mail", "onPremisesImmutableId", "onPremisesSyncEnabled",
	"passwordPolicies", "lastPasswordChangeDateTime", "accountEnabled", "preferredLanguage"}

// only marks c as a delta item that carried just the named properties.
func only(c events.CloudUser, carried ...string) events.CloudUser {
	for _, p := range deltaProps {
		if !slices.Contains(carried, p) {
			c.Absent = append(c.Absent, p)
		}
	}
	return c
}

func TestMergeKeepsPresentValues(t *testing.T) {
	prev := cloud("DisablePasswordExpiration", func(c *events.CloudUser) { c.Mail = "alice@example.test"; c.PreferredLanguage = "de-DE" })
	tests := []struct {
		name string
		item events.CloudUser
		want func(*events.CloudUser)
	}{
		{"present false is a value", only(events.CloudUser{ID: "cloud-alice"}, "accountEnabled", "onPremisesSyncEnabled"),
			func(c *events.CloudUser) { c.AccountEnabled, c.SyncEnabled = false, false }},
		{"null string clears", only(events.CloudUser{ID: "cloud-alice"}, "mail", "preferredLanguage"),
			func(c *events.CloudUser) { c.Mail, c.PreferredLanguage = "", "" }},
		{"absent keeps", only(events.CloudUser{ID: "cloud-alice", UPN: "renamed@example.test"}, "userPrincipalName"),
			func(c *events.CloudUser) { c.UPN = "renamed@example.test" }},
		{"full item replaces", cloud("None"), func(c *events.CloudUser) { *c = cloud("None") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := prev
			tt.want(&want)
			if got := mergeCloud(prev, tt.item); !got.Equal(want) {
				t.Errorf("merge:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// step is one input of a sequence: an AD state, a cloud state or a due timer.
type step struct {
	ad    *events.ADUser
	cloud *events.CloudUser
	timer bool
	after time.Duration // since the start of the sequence
}

func adStep(u events.ADUser, after time.Duration) step       { return step{ad: &u, after: after} }
func cloudStep(c events.CloudUser, after time.Duration) step { return step{cloud: &c, after: after} }

func TestCloudRules(t *testing.T) {
	ne := func(u *events.ADUser) { u.UserAccountControl |= events.UACDontExpirePassword }
	pwdChangedInCloud := func(c *events.CloudUser) { c.LastPasswordChange = at.Add(time.Minute) }
	tests := []struct {
		name  string
		steps []step
		want  []string // per step: "-" or kind[:policies]
	}{
		{"in_step_does_nothing", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second)},
			[]string{"-", "-"}},
		{"cloud_stamped_disable_expiration_is_drift", []step{adStep(user(10, setTime), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second)},
			[]string{"-", "set_password_policies:None"}},
		{"ad_never_expires_flag_set_is_mirrored", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second), adStep(user(11, setTime, ne), 2*time.Second)},
			[]string{"-", "-", "set_password_policies:DisablePasswordExpiration"}},
		{"other_policies_are_kept", []step{adStep(user(10, setTime, ne), 0), cloudStep(cloud("DisableStrongPassword"), time.Second)},
			[]string{"-", "set_password_policies:DisablePasswordExpiration, DisableStrongPassword"}},
		{"own_write_coming_back_is_not_drift", []step{adStep(user(10, setTime), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second),
			cloudStep(cloud("DisablePasswordExpiration", func(c *events.CloudUser) { c.Mail = "a@x" }), 2*time.Second), // stale delta before our write shows
			cloudStep(cloud("None"), 3*time.Second)},
			[]string{"-", "set_password_policies:None", "-", "-"}},
		{"drift_again_within_cooldown_alerts_instead_of_looping", []step{adStep(user(10, setTime), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second),
			cloudStep(cloud("None"), 2*time.Second), cloudStep(cloud("DisablePasswordExpiration"), 10*time.Minute)},
			[]string{"-", "set_password_policies:None", "-", "alert"}},
		{"drift_after_cooldown_is_reapplied", []step{adStep(user(10, setTime), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second),
			cloudStep(cloud("None"), 2*time.Second), cloudStep(cloud("DisablePasswordExpiration"), 2*time.Hour)},
			[]string{"-", "set_password_policies:None", "-", "set_password_policies:None"}},
		{"break_glass_never_written", []step{adStep(user(10, setTime, breakGlassUPN), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second)},
			[]string{"-", "-"}},
		{"cloud_password_change_not_followed_by_ad_alerts", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second),
			cloudStep(cloud("None", pwdChangedInCloud), 2*time.Minute), {timer: true, after: 13 * time.Minute}},
			[]string{"-", "-", "-", "alert"}},
		{"cloud_password_change_followed_by_ad_is_quiet", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second),
			cloudStep(cloud("None", pwdChangedInCloud), 2*time.Minute), adStep(user(11, events.ToFileTime(at.Add(90*time.Second))), 3*time.Minute),
			{timer: true, after: 13 * time.Minute}},
			[]string{"-", "-", "-", "-", "-"}},
		// every cloud change is judged on its own, not only the first
		{"second_cloud_only_change_after_a_followed_one_alerts", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second),
			cloudStep(cloud("None", pwdChangedInCloud), 2*time.Minute), adStep(user(11, events.ToFileTime(at.Add(90*time.Second))), 3*time.Minute),
			{timer: true, after: 13 * time.Minute},
			cloudStep(cloud("None", func(c *events.CloudUser) { c.LastPasswordChange = at.Add(2 * time.Hour) }), 2*time.Hour+time.Minute),
			{timer: true, after: 2*time.Hour + 20*time.Minute}},
			[]string{"-", "-", "-", "-", "-", "-", "alert"}},
		{"cloud_only_change_soon_after_ad_followed_alerts", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second),
			cloudStep(cloud("None", pwdChangedInCloud), 2*time.Minute), adStep(user(11, events.ToFileTime(at.Add(90*time.Second))), 3*time.Minute),
			// within the clock-skew tolerance of AD's last change, which followed the first one
			cloudStep(cloud("None", func(c *events.CloudUser) { c.LastPasswordChange = at.Add(150 * time.Second) }), 4*time.Minute),
			{timer: true, after: 13 * time.Minute}, {timer: true, after: 16 * time.Minute}},
			[]string{"-", "-", "-", "-", "-", "-", "alert"}},
		{"partial_delta_item_is_merged", []step{adStep(user(10, setTime), 0), cloudStep(cloud("None"), time.Second),
			cloudStep(only(events.CloudUser{ID: "cloud-alice", PasswordPolicies: "DisablePasswordExpiration"}, "passwordPolicies"), 2*time.Second)},
			[]string{"-", "-", "set_password_policies:None"}},
		// null is "cleared": a never-expires user whose cloud policies a sync
		// run cleared drifted, and must be re-stamped.
		{"policies_cleared_to_null_is_drift", []step{adStep(user(10, setTime, ne), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second),
			cloudStep(only(events.CloudUser{ID: "cloud-alice"}, "passwordPolicies"), 2*time.Second)},
			[]string{"-", "-", "set_password_policies:DisablePasswordExpiration"}},
		// an item without passwordPolicies (never set, unchanged) says nothing of it
		{"absent_policies_are_unknown_not_cleared", []step{adStep(user(10, setTime, ne), 0), cloudStep(cloud("DisablePasswordExpiration"), time.Second),
			cloudStep(only(events.CloudUser{ID: "cloud-alice", Mail: "new@example.test"}, "mail"), 2*time.Second)},
			[]string{"-", "-", "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := cloudPolicy()
			var s State
			var got []string
			var timers []events.Timer
			fired := 0
			for i, st := range tt.steps {
				ev := events.Envelope{ID: fmt.Sprintf("ev%d", i), Time: at.Add(st.after)}
				var res Result
				switch {
				case st.ad != nil:
					res = EvaluateAD(p, s, ev, *st.ad)
				case st.cloud != nil:
					res = EvaluateCloud(p, s, ev, *st.cloud)
				case st.timer:
					if fired == len(timers) {
						got = append(got, "no-timer")
						continue
					}
					res = EvaluateTimer(p, s, ev, timers[fired])
					fired++
				}
				timers = append(timers, res.Timers...)
				if res.Changed {
					s = res.State
				}
				var ks []string
				for _, a := range res.Actions {
					k := string(a.Kind)
					if a.Policies != "" {
						k += ":" + a.Policies
					}
					if a.User.CloudID == "" && a.Kind != events.ActionAlert {
						t.Errorf("action without cloud id: %+v", a)
					}
					ks = append(ks, k)
				}
				if len(ks) == 0 {
					ks = []string{"-"}
				}
				got = append(got, strings.Join(ks, ","))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("actions per step = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWithExpiration(t *testing.T) {
	tests := []struct {
		in      string
		disable bool
		want    string
	}{
		{"", true, "DisablePasswordExpiration"},
		{"None", false, "None"},
		{"DisablePasswordExpiration", false, "None"},
		{"DisablePasswordExpiration, DisableStrongPassword", false, "DisableStrongPassword"},
		{"disablestrongpassword", true, "DisablePasswordExpiration, disablestrongpassword"},
	}
	for _, tt := range tests {
		if got := events.WithExpiration(tt.in, tt.disable); got != tt.want {
			t.Errorf("WithExpiration(%q, %v) = %q, want %q", tt.in, tt.disable, got, tt.want)
		}
	}
}
