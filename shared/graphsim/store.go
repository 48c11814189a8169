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
}

type group struct {
	id, displayName string
	members         map[string]bool // user IDs
}

// store is the directory. The Server's mutex guards it.
type store struct {
	users  map[string]*User // by ID
	order  []string         // user IDs in creation order: list and paging order
	groups map[string]*group
	extra  map[string]map[string]json.RawMessage // unmodelled properties a PATCH set, by user ID
}

func newStore() *store {
	return &store{users: map[string]*User{}, groups: map[string]*group{}, extra: map[string]map[string]json.RawMessage{}}
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
	for _, id := range st.order {
		if u := st.users[id]; strings.EqualFold(u.UserPrincipalName, idOrUPN) {
			return u
		}
	}
	return nil
}

func (st *store) put(u User) {
	if u.ID == "" {
		if old := st.lookup(u.UserPrincipalName); old != nil && u.UserPrincipalName != "" {
			u.ID = old.ID // "create or replace": the same UPN is the same user
		} else {
			u.ID = newGUID()
		}
	}
	if _, ok := st.users[u.ID]; !ok {
		st.order = append(st.order, u.ID)
	}
	st.users[u.ID] = &u
	delete(st.extra, u.ID) // a replaced user starts from what the caller gave
}

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
