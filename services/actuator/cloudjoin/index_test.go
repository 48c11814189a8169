package cloudjoin

import (
	"testing"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

func TestIndexApply(t *testing.T) {
	base := Entry{ID: "u1", UPN: "Erin@example.test", ImmutableID: "imm-erin", AccountEnabled: true, PasswordPolicies: "DisablePasswordExpiration"}
	tests := []struct {
		name    string
		apply   func(ix *Index)
		id      string // expected by ByImmutableID("imm-erin") and ByUPN("erin@example.test"); "" = none
		want    Entry
		wantOld bool // u1 still known by ID
	}{
		{"absent_properties_are_kept", func(ix *Index) {
			ix.ApplyDelta(graph.DeltaUser{User: graph.User{ID: "u1", SyncEnabled: true},
				Absent: []string{propUPN, propImm, propEnabled, propPolicies}})
		}, "u1", Entry{ID: "u1", UPN: "Erin@example.test", ImmutableID: "imm-erin", SyncEnabled: true, AccountEnabled: true,
			PasswordPolicies: "DisablePasswordExpiration"}, true},
		{"present_null_clears", func(ix *Index) {
			ix.ApplyCloud(events.CloudUser{ID: "u1", UPN: "Erin@example.test", ImmutableID: "imm-erin", AccountEnabled: true})
		}, "u1", Entry{ID: "u1", UPN: "Erin@example.test", ImmutableID: "imm-erin", AccountEnabled: true}, true},
		{"removed", func(ix *Index) { ix.ApplyDelta(graph.DeltaUser{User: graph.User{ID: "u1"}, Removed: true}) }, "", Entry{}, false},
		{"recreated_under_a_new_id_then_old_removed", func(ix *Index) {
			ix.Put(Entry{ID: "u2", UPN: "erin@example.test", ImmutableID: "imm-erin"})
			ix.Remove("u1") // must not drop u2's keys
		}, "u2", Entry{ID: "u2", UPN: "erin@example.test", ImmutableID: "imm-erin"}, false},
		{"upn_renamed", func(ix *Index) {
			ix.ApplyCloud(events.CloudUser{ID: "u1", UPN: "erin.new@example.test", Absent: []string{propImm, propSync, propEnabled, propPolicies}})
		}, "", Entry{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := New()
			ix.Put(base)
			tt.apply(ix)
			e, ok := ix.ByUPN("erin@example.test")
			if (tt.id == "") != !ok || ok && (e.ID != tt.id || e != tt.want) {
				t.Fatalf("ByUPN = %+v, %v; want %q %+v", e, ok, tt.id, tt.want)
			}
			if tt.id != "" {
				if e, ok := ix.ByImmutableID("imm-erin"); !ok || e != tt.want {
					t.Fatalf("ByImmutableID = %+v, %v; want %+v", e, ok, tt.want)
				}
			}
			if _, ok := ix.ByID("u1"); ok != tt.wantOld {
				t.Fatalf("ByID(u1) found %v, want %v", ok, tt.wantOld)
			}
		})
	}
}
