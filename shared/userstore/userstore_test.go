package userstore_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
	"github.com/pwsync/pwsync/shared/userstore"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// TestReadsWhatTheWritersWrite: the evaluator's index and state and the
// actuator's join, written as their services write them, read back here.
func TestReadsWhatTheWritersWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, conn := natstest.Run(t)
	store, err := userstore.Open(ctx, conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	// empty buckets: nothing found, no error
	if err := store.EachState(ctx, func(userstate.State) bool { t.Error("a state in an empty bucket"); return true }); err != nil {
		t.Fatalf("listing an empty bucket: %v", err)
	}
	if g, err := store.GUIDByUPN(ctx, "nobody@example.test"); g != "" || err != nil {
		t.Fatalf("unknown UPN: %q %v", g, err)
	}

	users, _ := natsx.Bucket(ctx, conn.JS, natsx.BucketUsers)
	identity, _ := natsx.Bucket(ctx, conn.JS, natsx.BucketIdentity)
	put := func(kv interface {
		Put(context.Context, string, []byte) (uint64, error)
	}, key string, v []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	st := userstate.State{Seen: true, InScope: true, AD: events.ADUser{ObjectGUID: "g1", UPN: "Alice@Example.test"}}
	data, _ := json.Marshal(st)
	put(users, userstate.UserKey("g1"), data)
	put(users, userstate.UserKey("g2"), []byte("not json"))
	put(identity, userstate.UPNKey("Alice@Example.test"), []byte("g1"))
	put(identity, userstate.UserKey("legacy"), []byte("cloud-bare"))

	if g, err := store.GUIDByUPN(ctx, "alice@example.TEST"); g != "g1" || err != nil {
		t.Errorf("GUIDByUPN: %q %v, want g1 (case-insensitive)", g, err)
	}
	if got, found, err := store.State(ctx, "g1"); !found || err != nil || got.AD.UPN != st.AD.UPN || !got.InScope {
		t.Errorf("State(g1): %+v %v %v", got, found, err)
	}
	if _, found, err := store.State(ctx, "g3"); found || err != nil {
		t.Errorf("State(g3): found %v %v, want not found", found, err)
	}
	if _, _, err := store.State(ctx, "g2"); err == nil {
		t.Error("State(g2): an undecodable state read without an error")
	}
	n := 0
	if err := store.EachState(ctx, func(userstate.State) bool { n++; return true }); err != nil || n != 1 {
		t.Errorf("EachState: %d states, %v; want the one decodable", n, err)
	}

	if err := store.PutJoin(ctx, "g1", userstate.Join{CloudID: "c1", UPN: "alice@example.test", Via: userstate.JoinedViaUPN}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ guid, want string }{{"g1", "c1"}, {"legacy", "cloud-bare"}, {"g9", ""}} {
		if got, err := store.JoinedCloudID(ctx, tc.guid); got != tc.want || err != nil {
			t.Errorf("JoinedCloudID(%s): %q %v, want %q", tc.guid, got, err, tc.want)
		}
	}
	if j, ok, err := store.Join(ctx, "g1"); !ok || err != nil || j.Via != userstate.JoinedViaUPN {
		t.Errorf("Join(g1): %+v %v %v", j, ok, err)
	}
	if err := store.DeleteJoin(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.Join(ctx, "g1"); ok || err != nil {
		t.Errorf("Join(g1) after DeleteJoin: %v %v", ok, err)
	}
	if err := store.DeleteJoin(ctx, "g1"); err != nil {
		t.Errorf("deleting a missing join: %v", err)
	}
}
