package rules

import "github.com/pwsync/pwsync/shared/events"

// placeUSN orders a new AD state of a user against the state already
// evaluated, and maps its uSNChanged onto the user's sequence. It returns
// u with the mapped USN, the offset to keep, and whether u is stale.
//
// A USN is one DC's own (MS-ADTS 3.1.1.1.9): from the same DC, a lower one
// is older. From another DC (the watcher moved), USNs say nothing; what
// orders the password is pwdLastSet's replication version, which every
// originating write raises on every DC: a lower one is a DC that has not
// replicated the latest password yet, and its state must not undo what
// was decided on it. The state from the other DC then gets the next
// sequence number, so actions' Seq keep growing across DCs.
func placeUSN(s State, u events.ADUser) (events.ADUser, int64, bool) {
	if !s.Seen {
		return u, 0, false
	}
	sameDC := u.DC == "" || s.AD.DC == "" || u.DC == s.AD.DC
	if sameDC {
		u.USNChanged += s.USNOffset
		return u, s.USNOffset, u.USNChanged < s.AD.USNChanged
	}
	if u.PwdVersion != 0 && s.AD.PwdVersion != 0 && u.PwdVersion < s.AD.PwdVersion {
		return u, s.USNOffset, true
	}
	offset := max(s.AD.USNChanged+1-u.USNChanged, 0)
	u.USNChanged += offset
	return u, offset, false
}
