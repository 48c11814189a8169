package events

import (
	"fmt"
	"time"
)

// TypeADFullSync marks the end of a domain's full sync (Data: ADFullSync):
// every user state of the scan was published before it. The evaluator's
// backfill brake counts a full sync's backfill only once it has all of it.
const TypeADFullSync = "fullsync"

// ADFullSync is the end-of-full-sync marker of one domain.
type ADFullSync struct {
	Domain string `json:"domain"`
	// Users is how many user states the scan published.
	Users   int       `json:"users"`
	Started time.Time `json:"started"`
}

// EventID names the marker: one per domain and scan.
func (f ADFullSync) EventID() string {
	return KeySafe(fmt.Sprintf("ad.fullsync.%s.%d", f.Domain, f.Started.UnixNano()))
}
