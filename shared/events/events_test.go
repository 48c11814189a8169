package events

import "testing"

// TestStateID: an AD user event ID loses its policy revision and nothing
// else; other IDs are kept as they are.
func TestStateID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ad.guid-1.a784ca73.7481.p3", "ad.guid-1.a784ca73.7481"},
		{"ad.guid-1.7481.p12", "ad.guid-1.7481"},
		{"ad.guid-1.a784ca73.7481", "ad.guid-1.a784ca73.7481"},
		{"ad.guid-1.7481.p", "ad.guid-1.7481.p"},
		{"ad.policy.example.test.3", "ad.policy.example.test.3"},
		{"ad.fullsync.example.test.1700000000", "ad.fullsync.example.test.1700000000"},
		{"cloud.c-1.p3", "cloud.c-1.p3"},
		{"timer.expiry.guid-1.k.7", "timer.expiry.guid-1.k.7"},
		{"e1", "e1"},
	} {
		if got := StateID(tc.in); got != tc.want {
			t.Errorf("StateID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	u := ADUser{ObjectGUID: "guid-1", USNChanged: 7481, DC: "a784ca73-0000", PolicyRev: 3}
	noRev := u
	noRev.PolicyRev = 0
	if StateID(u.EventID()) != noRev.EventID() {
		t.Errorf("StateID(%q) = %q, want the event ID without a policy revision %q", u.EventID(), StateID(u.EventID()), noRev.EventID())
	}
}
