// Package cloudjoin keeps the AD <-> Entra join in memory: for every cloud
// account its object ID, userPrincipalName, onPremisesImmutableId and its
// kind (onPremisesSyncEnabled, accountEnabled, passwordPolicies). With it
// the actuator knows whom to write to, and how, without reading Graph
// before the write. It is loaded by one paged /users read, kept current by
// delta (its own poll, or the events.graph.user events graphwatch
// publishes) and by what Graph's answers tell the actuator (see Sync).
package cloudjoin

import (
	"strings"
	"sync"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// Entry is one cloud account as the join knows it.
type Entry struct {
	ID               string
	UPN              string
	ImmutableID      string
	SyncEnabled      bool
	AccountEnabled   bool
	PasswordPolicies string
}

// User is the entry as a graph.User (passwordProfile and dates unknown).
func (e Entry) User() *graph.User {
	return &graph.User{ID: e.ID, UPN: e.UPN, ImmutableID: e.ImmutableID, SyncEnabled: e.SyncEnabled,
		AccountEnabled: e.AccountEnabled, PasswordPolicies: e.PasswordPolicies}
}

// FromUser is the entry of a user read from Graph.
func FromUser(u graph.User) Entry {
	return Entry{ID: u.ID, UPN: u.UPN, ImmutableID: u.ImmutableID, SyncEnabled: u.SyncEnabled,
		AccountEnabled: u.AccountEnabled, PasswordPolicies: u.PasswordPolicies}
}

// Index is the join, safe for concurrent use.
type Index struct {
	mu     sync.RWMutex
	byID   map[string]Entry
	byImm  map[string]string // onPremisesImmutableId -> ID
	byUPN  map[string]string // lower-case userPrincipalName -> ID
	loaded bool
}

// New returns an empty index.
func New() *Index {
	return &Index{byID: map[string]Entry{}, byImm: map[string]string{}, byUPN: map[string]string{}}
}

// Loaded reports whether the first full read is in.
func (ix *Index) Loaded() bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.loaded
}

// Len is the number of cloud accounts known.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// ByID is the account with this object ID.
func (ix *Index) ByID(id string) (Entry, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.byID[id]
	return e, ok
}

// ByImmutableID is the account anchored to this onPremisesImmutableId.
func (ix *Index) ByImmutableID(imm string) (Entry, bool) {
	if imm == "" {
		return Entry{}, false
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.byID[ix.byImm[imm]]
	return e, ok
}

// ByUPN is the account with this userPrincipalName (case-insensitive).
func (ix *Index) ByUPN(upn string) (Entry, bool) {
	if upn == "" {
		return Entry{}, false
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.byID[ix.byUPN[strings.ToLower(upn)]]
	return e, ok
}

// Put adds or replaces an account.
func (ix *Index) Put(e Entry) {
	if e.ID == "" {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.put(e)
}

// Observe takes what a read of the user answered.
func (ix *Index) Observe(u graph.User) { ix.Put(FromUser(u)) }

func (ix *Index) put(e Entry) {
	ix.remove(e.ID)
	ix.byID[e.ID] = e
	if e.ImmutableID != "" {
		ix.byImm[e.ImmutableID] = e.ID
	}
	if e.UPN != "" {
		ix.byUPN[strings.ToLower(e.UPN)] = e.ID
	}
}

// Remove forgets an account (deleted, or a write found it gone).
func (ix *Index) Remove(id string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(id)
}

func (ix *Index) remove(id string) {
	old, ok := ix.byID[id]
	if !ok {
		return
	}
	delete(ix.byID, id)
	// Another account may hold the key by now (a user recreated with the
	// same anchor): only drop what still points here.
	if ix.byImm[old.ImmutableID] == id {
		delete(ix.byImm, old.ImmutableID)
	}
	if k := strings.ToLower(old.UPN); ix.byUPN[k] == id {
		delete(ix.byUPN, k)
	}
}

// Graph property names a delta item may leave out (graph.DeltaUser.Absent).
const (
	propUPN      = "userPrincipalName"
	propImm      = "onPremisesImmutableId"
	propSync     = "onPremisesSyncEnabled"
	propEnabled  = "accountEnabled"
	propPolicies = "passwordPolicies"
)

// ApplyDelta takes one delta item: a removal, or the properties it carries
// over what was known (an absent property is unchanged, not cleared).
func (ix *Index) ApplyDelta(d graph.DeltaUser) {
	ix.apply(d.ID, d.Removed, FromUser(d.User), func(name string) bool { return !contains(d.Absent, name) })
}

// ApplyCloud takes one events.graph.user event (graphwatch's delta item).
func (ix *Index) ApplyCloud(c events.CloudUser) {
	e := Entry{ID: c.ID, UPN: c.UPN, ImmutableID: c.ImmutableID, SyncEnabled: c.SyncEnabled,
		AccountEnabled: c.AccountEnabled, PasswordPolicies: c.PasswordPolicies}
	ix.apply(c.ID, c.Removed, e, c.Has)
}

func (ix *Index) apply(id string, removed bool, in Entry, has func(string) bool) {
	if id == "" {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if removed {
		ix.remove(id)
		return
	}
	e := ix.byID[id]
	e.ID = id
	if has(propUPN) {
		e.UPN = in.UPN
	}
	if has(propImm) {
		e.ImmutableID = in.ImmutableID
	}
	if has(propSync) {
		e.SyncEnabled = in.SyncEnabled
	}
	if has(propEnabled) {
		e.AccountEnabled = in.AccountEnabled
	}
	if has(propPolicies) {
		e.PasswordPolicies = in.PasswordPolicies
	}
	ix.put(e)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
