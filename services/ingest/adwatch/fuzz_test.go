package adwatch

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
)

// FuzzToUser feeds toUser the attribute values a DC (or anything that
// answers on its port) may send. Whatever they are: no panic; a user is
// built only when the attributes that decide enforcement parse exactly, so
// that garbage never reads as pwdLastSet=0 ("must change") or as a flag.
func FuzzToUser(f *testing.F) {
	guid := []byte{0x7d, 0x6b, 0x1c, 0x0a, 0x2b, 0x3c, 0x4d, 0x4e, 0x8f, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6}
	f.Add(guid, "0", "512", "12345", "0", "9223372036854775807", guid, "CN=a,DC=x")
	f.Add(guid, "133497000000000000", "66048", "1", "8388608", "", []byte{}, "")
	f.Add([]byte{1, 2, 3}, "-1", "0x200", "", "", "", guid, "CN=\\00")
	f.Add(guid, " 0", "512 ", "+7", "-0", "1e9", guid[:15], "CN=x")
	f.Add(guid, "99999999999999999999", "512", "1", "", "", guid, "")
	f.Fuzz(func(t *testing.T, rawGUID []byte, pwdLastSet, uac, usn, uacComputed, expiry string, anchor []byte, dn string) {
		attrs := map[string][]string{
			"pwdLastSet": {pwdLastSet}, "userAccountControl": {uac}, "uSNChanged": {usn},
			"msDS-User-Account-Control-Computed": {uacComputed}, "msDS-UserPasswordExpiryTimeComputed": {expiry},
			"sAMAccountName": {"fuzz"}, "memberOf": {dn, dn},
		}
		e := ldap.NewEntry(dn, attrs)
		e.Attributes = append(e.Attributes,
			&ldap.EntryAttribute{Name: "objectGUID", Values: []string{string(rawGUID)}, ByteValues: [][]byte{rawGUID}},
			&ldap.EntryAttribute{Name: attrConsistencyGUID, Values: []string{string(anchor)}, ByteValues: [][]byte{anchor}})
		for _, anchorMode := range []string{AnchorObjectGUID, AnchorConsistencyGUID} {
			w := &Watcher{cfg: Config{Domain: "example.test", Anchor: anchorMode}, log: zerolog.Nop()}
			u, err := w.toUser(e, true)
			if err != nil {
				continue
			}
			for attr, got := range map[string]int64{"pwdLastSet": u.PwdLastSet, "userAccountControl": u.UserAccountControl, "uSNChanged": u.USNChanged} {
				want, perr := strconv.ParseInt(attrs[attr][0], 10, 64)
				if perr != nil || want != got {
					t.Fatalf("%s %q accepted as %d", attr, attrs[attr][0], got)
				}
			}
			back, err := events.ParseGUID(u.ObjectGUID)
			if err != nil || string(back) != string(rawGUID) {
				t.Fatalf("objectGUID %x became %q", rawGUID, u.ObjectGUID)
			}
			if u.ImmutableID == "" || u.EventID() == "" || !u.FullSync {
				t.Fatalf("incomplete user %+v", u)
			}
			if _, err := json.Marshal(u); err != nil {
				t.Fatalf("user does not encode: %v", err)
			}
		}
	})
}

// FuzzDirSyncCursor feeds the saved-cursor decoding whatever the cursors
// bucket may hold (another version's format, a truncated write): it either
// yields two non-empty cookies or is refused, which means a full sync.
func FuzzDirSyncCursor(f *testing.F) {
	f.Add([]byte(`{"users":"AQID","deleted":"BAUG"}`))
	f.Add([]byte(`{"users":"","deleted":null}`))
	f.Add([]byte(`{"users":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cur, ok := decodeDirSyncCursor(raw)
		if ok && (len(cur.Users) == 0 || len(cur.Deleted) == 0) {
			t.Fatalf("accepted a cursor without cookies: %q", raw)
		}
	})
}
