package graphsim

import (
	"fmt"
	"hash/fnv"
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

// The app's directory roles as Graph serves them: its service principal
// and its role assignments (tenant-wide, scope "/"), so that a client can
// check the role as it would in a tenant (pwsync conformance does).

var (
	rolesSPRead   = []string{"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	rolesRoleRead = []string{"RoleManagement.Read.Directory", "RoleManagement.Read.All", "RoleManagement.ReadWrite.Directory", "Directory.Read.All", "Directory.ReadWrite.All"}
)

// roleTemplateIDs are the built-in roles' template IDs (the same in every
// tenant); another name gets an ID derived from it.
var roleTemplateIDs = map[string]string{
	"user administrator":                      "fe930be7-5e62-47db-91af-98c3a49a38b1",
	"privileged authentication administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
	"global administrator":                    "62e90394-69f5-4237-9190-012177145e10",
	"helpdesk administrator":                  "729827e3-9c14-49f7-bb1b-9608f156bbb8",
	"password administrator":                  "966707d0-3269-4727-9be2-8c3a10f19b9d",
	"authentication administrator":            "c4e39bd9-1100-46d3-8c65-fb160da0071f",
}

func roleTemplateID(name string) string {
	if id, ok := roleTemplateIDs[strings.ToLower(name)]; ok {
		return id
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(strings.ToLower(name))) // hash writes cannot fail
	return fmt.Sprintf("00000000-0000-4000-8000-%012x", h.Sum64()&0xffffffffffff)
}

// GET /servicePrincipals(appId='{appId}')
func (s *Server) getServicePrincipal(c *call) reply {
	if !strings.EqualFold(c.vars[0], s.opts.ClientID) {
		return notFound(c.vars[0])
	}
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#servicePrincipals/$entity",
		"id":             s.spID,
		"appId":          s.opts.ClientID,
		"displayName":    "pwsync",
	})
}

// GET /roleManagement/directory/roleAssignments[?$filter=principalId eq '{id}'][&$expand=roleDefinition]
func (s *Server) listRoleAssignments(c *call) reply {
	principal := ""
	if raw := c.query.Get("$filter"); raw != "" {
		f := strings.Fields(raw)
		if len(f) != 3 || !strings.EqualFold(f[0], "principalId") || !strings.EqualFold(f[1], "eq") || len(f[2]) < 2 || f[2][0] != '\'' || f[2][len(f[2])-1] != '\'' {
			return errorReply(http.StatusBadRequest, codeUnsupportedQuery, "Unsupported query: this simulator filters role assignments by principalId eq '{id}' only.")
		}
		principal = f[2][1 : len(f[2])-1]
	}
	expand := strings.EqualFold(c.query.Get("$expand"), "roleDefinition")
	s.mu.Lock()
	roles := slices.Clone(s.dirRoles)
	s.mu.Unlock()
	value := []map[string]any{}
	if principal == "" || strings.EqualFold(principal, s.spID) {
		for _, r := range roles {
			tid := roleTemplateID(r)
			a := map[string]any{"id": tid + "_" + s.spID, "principalId": s.spID, "directoryScopeId": "/", "roleDefinitionId": tid}
			if expand {
				a["roleDefinition"] = map[string]any{"id": tid, "templateId": tid, "displayName": r, "isBuiltIn": roleTemplateIDs[strings.ToLower(r)] != ""}
			}
			value = append(value, a)
		}
	}
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#roleManagement/directory/roleAssignments",
		"value":          value,
	})
}
