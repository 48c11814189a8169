package graphsim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Directory roles. An app writing passwordProfile app-only needs, besides
// the permission, "at least the User Administrator Microsoft Entra role"
// (user: update, passwordProfile); and a User Administrator may reset only
// users without an admin role or with one of the roles it is allowed to
// reset ("Who can reset passwords"): the others need Privileged
// Authentication Administrator (or Global Administrator). The app's roles
// are Options.DirectoryRoles; a user's are set with SetUserDirectoryRoles.

// Role display names, as the Entra admin center shows them.
const (
	RoleUserAdministrator           = "User Administrator"
	RolePrivilegedAuthAdministrator = "Privileged Authentication Administrator"
	RoleGlobalAdministrator         = "Global Administrator"
)

var (
	// passwordWriterRoles may write the passwordProfile of unprivileged users.
	passwordWriterRoles = []string{RoleUserAdministrator, RolePrivilegedAuthAdministrator, RoleGlobalAdministrator}
	// privilegedWriterRoles may write anyone's.
	privilegedWriterRoles = []string{RolePrivilegedAuthAdministrator, RoleGlobalAdministrator}
	// userAdminResettable are the target roles a User Administrator may
	// still reset (lower-cased).
	userAdminResettable = map[string]bool{
		"directory readers": true, "groups administrator": true, "guest inviter": true,
		"helpdesk administrator": true, "message center reader": true, "password administrator": true,
		"reports reader": true, "user administrator": true, "usage summary reports reader": true,
	}
)

// SetDirectoryRoles replaces the directory roles of the app's service
// principal (see Options.DirectoryRoles; nil or empty: none).
func (s *Server) SetDirectoryRoles(roles ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirRoles = slices.Clone(roles)
}

// SetUserDirectoryRoles assigns directory (admin) roles to a user, e.g.
// "Global Administrator"; none clears them. Roles are not a user property
// in Graph, but they decide who may write the user's passwordProfile.
func (s *Server) SetUserDirectoryRoles(idOrUPN string, roles ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(idOrUPN)
	if u == nil {
		return fmt.Errorf("graphsim: no user %q", idOrUPN)
	}
	s.store.roles[u.ID] = slices.Clone(roles)
	return nil
}

// privilegedTarget reports whether a user holds a role that only a
// Privileged Authentication Administrator may reset.
func (st *store) privilegedTarget(u *User) bool {
	return slices.ContainsFunc(st.roles[u.ID], func(r string) bool { return !userAdminResettable[strings.ToLower(r)] })
}

// checkPasswordWriter is the directory-role check of a passwordProfile
// write to u by the app; nil when allowed. The caller holds the lock.
func (s *Server) checkPasswordWriter(u *User) *reply {
	need := passwordWriterRoles
	if s.store.privilegedTarget(u) {
		need = privilegedWriterRoles
	}
	if hasAnyRole(s.dirRoles, need) {
		return nil
	}
	r := errorReply(http.StatusForbidden, codeAuthDenied, "Insufficient privileges to complete the operation.")
	return &r
}
