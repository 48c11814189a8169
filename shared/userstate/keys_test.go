package userstate

import "testing"

// TestKeys pins the buckets' key layout: deployments hold these keys, and
// every reader and writer must agree on them.
func TestKeys(t *testing.T) {
	for _, tc := range []struct{ name, got, want string }{
		{"user", UserKey("0f1e2d3c-aaaa-bbbb-cccc-000000000001"), "0f1e2d3c-aaaa-bbbb-cccc-000000000001"},
		{"upn lower-cased, @ made safe", UPNKey("Alice.Smith@Example.TEST"), "upn.alice.smith_example.test"},
		{"no upn", UPNKey(""), ""},
		{"immutable id: + becomes _", ImmKey("PC0eD+qqu7vMzAAAAAAAAQ=="), "imm.PC0eD_qqu7vMzAAAAAAAAQ=="},
		{"no immutable id", ImmKey(""), ""},
		{"parked", ParkedKey("Bob@Example.test"), "parked.upn.bob_example.test"},
		{"join", JoinKey("0f1e2d3c-aaaa-bbbb-cccc-000000000001"), "0f1e2d3c-aaaa-bbbb-cccc-000000000001"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: key %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestDecodeJoin(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        Join
		ok          bool
	}{
		{"record", `{"cloud_id":"c1","upn":"a@x.test","via":"upn"}`, Join{CloudID: "c1", UPN: "a@x.test", Via: JoinedViaUPN}, true},
		{"no cloud id", `{"upn":"a@x.test"}`, Join{}, false},
		{"not a record", `c1`, Join{}, false},
	} {
		got, ok := DecodeJoin([]byte(tc.value))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
