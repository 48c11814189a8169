package graphsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// User is a simulated Entra ID user. JSON names follow Graph's, so seed
// files read like Graph payloads.
type User struct {
	ID                                   string    `json:"id"`
	UserPrincipalName                    string    `json:"userPrincipalName"`
	Mail                                 string    `json:"mail,omitempty"`
	DisplayName                          string    `json:"displayName,omitempty"`
	OnPremisesImmutableId                string    `json:"onPremisesImmutableId,omitempty"`
	PasswordPolicies                     string    `json:"passwordPolicies,omitempty"`
	PreferredLanguage                    string    `json:"preferredLanguage,omitempty"`
	OnPremisesSyncEnabled                bool      `json:"onPremisesSyncEnabled,omitempty"`
	AccountEnabled                       bool      `json:"accountEnabled"`
	ForceChangePasswordNextSignIn        bool      `json:"forceChangePasswordNextSignIn,omitempty"`
	ForceChangePasswordNextSignInWithMfa bool      `json:"forceChangePasswordNextSignInWithMfa,omitempty"`
	Password                             string    `json:"password,omitempty"` // last password set; never logged
	LastPasswordChangeDateTime           time.Time `json:"lastPasswordChangeDateTime,omitzero"`
	SignInSessionsValidFromDateTime      time.Time `json:"signInSessionsValidFromDateTime,omitzero"`

	// profileSet: a passwordProfile write was applied. A user with neither
	// that, nor a password, nor a flag has no profile: it reads null.
	profileSet bool
}

// hasPasswordProfile reports whether passwordProfile reads as an object.
func (u *User) hasPasswordProfile() bool {
	return u.profileSet || u.Password != "" || u.ForceChangePasswordNextSignIn || u.ForceChangePasswordNextSignInWithMfa
}

type group struct {
	id, displayName string
	members         map[string]bool // user IDs
	groups          map[string]bool // nested group IDs (transitiveMembers follows them)
}

// store is the directory. The Server's mutex guards it.
//
// Every change to a user gets the next sequence number, per property, so
// that delta query can say what changed since a token and change
// notifications can fire for any change.
type store struct {
	users  map[string]*User  // by ID
	order  []string          // user IDs in creation order: list and paging order
	byUPN  map[string]string // lower-cased userPrincipalName -> ID
	byImm  map[string]string // lower-cased onPremisesImmutableId -> ID
	groups map[string]*group
	extra  map[string]map[string]json.RawMessage // unmodelled properties a PATCH set, by user ID

	seq     uint64                       // last change sequence number
	propSeq map[string]map[string]uint64 // user ID -> property -> seq of its last change
	removed map[string]uint64            // deleted user ID -> seq of the deletion
	purged  map[string]bool              // removed IDs that were deleted permanently
	everSet map[string]map[string]bool   // user ID -> properties that ever held a value (delta leaves the others out)
	roles   map[string][]string          // user ID -> the user's directory (admin) roles

	// onChange is called, with the Server lock held, after every change to
	// a user: change notifications hang off it.
	onChange func(userID string, kind changeKind)
}

func newStore() *store {
	return &store{
		users: map[string]*User{}, byUPN: map[string]string{}, byImm: map[string]string{}, groups: map[string]*group{},
		extra: map[string]map[string]json.RawMessage{}, propSeq: map[string]map[string]uint64{}, removed: map[string]uint64{},
		purged: map[string]bool{}, everSet: map[string]map[string]bool{}, roles: map[string][]string{},
	}
}

// lookup finds a user by object ID or, as Graph does, by userPrincipalName
// (case-insensitive).
func (st *store) lookup(idOrUPN string) *User {
	if u, ok := st.users[idOrUPN]; ok {
		return u
	}
	if u, ok := st.users[strings.ToLower(idOrUPN)]; ok {
		return u // IDs are GUIDs: case-insensitive too
	}
	return st.users[st.byUPN[strings.ToLower(idOrUPN)]]
}

// put creates or replaces a user and returns the stored one.
func (st *store) put(u User) *User {
	if u.ID == "" {
		if old := st.lookup(u.UserPrincipalName); old != nil && u.UserPrincipalName != "" {
			u.ID = old.ID // "create or replace": the same UPN is the same user
		} else {
			u.ID = newGUID()
		}
	}
	var before map[string]string
	if old, ok := st.users[u.ID]; ok {
		before = st.snapshot(old)
		st.unindex(old)
	} else {
		st.order = append(st.order, u.ID)
	}
	st.users[u.ID] = &u
	st.index(&u)
	delete(st.extra, u.ID) // a replaced user starts from what the caller gave
	st.commit(u.ID, before)
	return &u
}

// changeKind is what happened to a user, for change notifications.
type changeKind int

const (
	changeUpdated     changeKind = iota // created or updated
	changeSoftDeleted                   // deleted (restorable): Graph still says "updated"
	changePurged                        // deleted permanently: "deleted"
)

// remove deletes a user and its memberships: Graph's soft delete, or a
// permanent one (purge).
func (st *store) remove(u *User, purge bool) {
	delete(st.users, u.ID)
	st.unindex(u)
	delete(st.extra, u.ID)
	delete(st.propSeq, u.ID)
	delete(st.everSet, u.ID)
	delete(st.roles, u.ID)
	st.order = slices.DeleteFunc(st.order, func(id string) bool { return id == u.ID })
	for _, g := range st.groups {
		delete(g.members, u.ID)
	}
	st.markRemoved(u.ID, purge)
}

// markRemoved records a deletion (or the purge of a soft-deleted user).
func (st *store) markRemoved(id string, purge bool) {
	st.seq++
	st.removed[id] = st.seq
	st.purged[id] = purge
	kind := changeSoftDeleted
	if purge {
		kind = changePurged
	}
	if st.onChange != nil {
		st.onChange(id, kind)
	}
}

// snapshot renders every property as JSON, to diff before and after a change.
func (st *store) snapshot(u *User) map[string]string {
	out := make(map[string]string, len(userProps))
	for _, p := range userProps {
		b, _ := json.Marshal(st.userValue(u, p)) // values are strings, bools, maps and raw JSON
		out[p] = string(b)
	}
	return out
}

// commit records the properties of a user that differ from before (nil
// before: the user is new) and returns them.
func (st *store) commit(id string, before map[string]string) []string {
	u := st.users[id]
	after := st.snapshot(u)
	var changed []string
	for _, p := range userProps {
		if before == nil || before[p] != after[p] {
			changed = append(changed, p)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	st.seq++
	seqs := st.propSeq[id]
	if seqs == nil || before == nil {
		seqs = map[string]uint64{}
		st.propSeq[id] = seqs
		st.everSet[id] = map[string]bool{}
		delete(st.removed, id) // re-created
		delete(st.purged, id)
	}
	for _, p := range changed {
		seqs[p] = st.seq
		if v := after[p]; v != "null" && v != "[]" {
			st.everSet[id][p] = true
		}
	}
	if before == nil {
		seqs[createdKey] = st.seq
	}
	if st.onChange != nil {
		st.onChange(id, changeUpdated)
	}
	return changed
}

func (st *store) index(u *User) {
	st.byUPN[strings.ToLower(u.UserPrincipalName)] = u.ID
	if u.OnPremisesImmutableId != "" {
		st.byImm[strings.ToLower(u.OnPremisesImmutableId)] = u.ID
	}
}

func (st *store) unindex(u *User) {
	if st.byUPN[strings.ToLower(u.UserPrincipalName)] == u.ID {
		delete(st.byUPN, strings.ToLower(u.UserPrincipalName))
	}
	if imm := strings.ToLower(u.OnPremisesImmutableId); st.byImm[imm] == u.ID {
		delete(st.byImm, imm)
	}
}

// setUPN changes a user's userPrincipalName, keeping the index.
func (st *store) setUPN(u *User, upn string) {
	st.unindex(u)
	u.UserPrincipalName = upn
	st.index(u)
}

// setImmutableID changes a user's onPremisesImmutableId, keeping the index.
func (st *store) setImmutableID(u *User, id string) {
	st.unindex(u)
	u.OnPremisesImmutableId = id
	st.index(u)
}

// lookupBy finds a user by an indexed property, compared as $filter eq
// compares strings: case-insensitively.
func (st *store) lookupBy(prop, val string) *User {
	switch prop {
	case "id":
		if u, ok := st.users[val]; ok {
			return u
		}
		return st.users[strings.ToLower(val)]
	case "userPrincipalName":
		return st.users[st.byUPN[strings.ToLower(val)]]
	case "onPremisesImmutableId":
		return st.users[st.byImm[strings.ToLower(val)]]
	}
	return nil
}

// createdKey marks a user's creation in propSeq.
const createdKey = ""

func (st *store) list() []*User {
	out := make([]*User, 0, len(st.order))
	for _, id := range st.order {
		out = append(out, st.users[id])
	}
	return out
}

func (st *store) group(id string) *group {
	if g, ok := st.groups[id]; ok {
		return g
	}
	return st.groups[strings.ToLower(id)]
}

// PutUser creates or replaces a user. An empty ID is generated, unless a

// PutUser creates or replaces a user. An empty ID is generated, unless a
// user with the same userPrincipalName exists: then that user is replaced.
func (s *Server) PutUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store.put(u)
}

// User returns a copy of the user with that object ID or userPrincipalName.
func (s *Server) User(idOrUPN string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(idOrUPN)
	if u == nil {
		return User{}, false
	}
	return *u, true
}

// PutGroup creates a group or renames an existing one (keeping members).
func (s *Server) PutGroup(id, displayName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.store.group(id); g != nil {
		g.displayName = displayName
		return
	}
	s.store.groups[id] = &group{id: id, displayName: displayName, members: map[string]bool{}}
}

// AddGroupMember makes a user (by ID or UPN) a member of an existing group,
// for test setup; adding a member twice is not an error here.
func (s *Server) AddGroupMember(groupID, idOrUPN string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(groupID)
	if g == nil {
		return fmt.Errorf("graphsim: no group %q", groupID)
	}
	u := s.store.lookup(idOrUPN)
	if u == nil {
		return fmt.Errorf("graphsim: no user %q", idOrUPN)
	}
	g.members[u.ID] = true
	return nil
}

// GroupMembers returns the user IDs in the group, sorted; nil for an
// unknown group.
func (s *Server) GroupMembers(groupID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(groupID)
	if g == nil {
		return nil
	}
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
