package graphsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// GET /groups/{id}
func (s *Server) getGroup(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(c.vars[0])
	if g == nil {
		return notFound(c.vars[0])
	}
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context":  graphContext + "#groups/$entity",
		"id":              g.id,
		"displayName":     g.displayName,
		"securityEnabled": true,
		"mailEnabled":     false,
		"groupTypes":      []string{},
	})
}

// GET /groups/{id}/members: the member users as directoryObjects.
func (s *Server) listMembers(c *call) reply {
	sel, err := parseSelect(c.query.Get("$select"), knownUserProp)
	if err != nil {
		return queryErrorReply(err)
	}
	props := sel
	if props == nil {
		props = defaultUserProps
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(c.vars[0])
	if g == nil {
		return notFound(c.vars[0])
	}
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	value := []map[string]any{}
	for _, id := range ids {
		if u := s.store.users[id]; u != nil {
			obj := s.store.userObject(u, props)
			obj["@odata.type"] = "#microsoft.graph.user"
			value = append(value, obj)
		}
	}
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#directoryObjects",
		"value":          value,
	})
}

// POST /groups/{id}/members/$ref {"@odata.id": ".../directoryObjects/{id}"}
func (s *Server) addMember(c *call) reply {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(c.body, &body); err != nil {
		return errorReply(http.StatusBadRequest, codeODataBadRequest, "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
	}
	var ref string
	if raw, ok := body["@odata.id"]; !ok || json.Unmarshal(raw, &ref) != nil || ref == "" {
		return badRequest("The request body must carry '@odata.id' with the URL of a directory object, e.g. " + c.base + "/directoryObjects/{id}.")
	}
	for k := range body {
		if k != "@odata.id" {
			return badRequest("Property '" + k + "' does not exist as a declared property or extension property.")
		}
	}
	uid, ok := refID(ref, c.base)
	if !ok {
		return badRequest("Invalid object identifier '" + ref + "'.")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(c.vars[0])
	if g == nil {
		return notFound(c.vars[0])
	}
	u := s.store.lookup(uid)
	if u == nil {
		return notFound(uid)
	}
	if g.members[u.ID] {
		return badRequest("One or more added object references already exist for the following modified properties: 'members'.")
	}
	g.members[u.ID] = true
	return emptyReply(http.StatusNoContent)
}

// refID extracts the object ID from an @odata.id, which must be an
// absolute URL on the Graph host the request came to (base,
// "https://host/v1.0"), as graph.microsoft.com's own
// https://graph.microsoft.com/v1.0/directoryObjects/{id} (or .../users/{id}):
// a national cloud or the simulator has its own host, and a reference to
// another one is refused.
func refID(ref, base string) (string, bool) {
	u, err := url.Parse(ref)
	if err != nil || !u.IsAbs() {
		return "", false
	}
	b, err := url.Parse(base)
	if err != nil || !strings.EqualFold(u.Scheme, b.Scheme) || !strings.EqualFold(u.Host, b.Host) {
		return "", false
	}
	parts := splitPath(strings.TrimPrefix(u.Path, graphPrefix))
	if len(parts) != 2 || !strings.HasPrefix(u.Path, graphPrefix+"/") {
		return "", false
	}
	switch strings.ToLower(parts[0]) {
	case "directoryobjects", "users":
		return parts[1], parts[1] != ""
	}
	return "", false
}

// DELETE /groups/{id}/members/{userId}/$ref
func (s *Server) removeMember(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.store.group(c.vars[0])
	if g == nil {
		return notFound(c.vars[0])
	}
	uid := c.vars[1]
	if u := s.store.lookup(uid); u != nil {
		uid = u.ID
	}
	if !g.members[uid] {
		return notFound(c.vars[1])
	}
	delete(g.members, uid)
	return emptyReply(http.StatusNoContent)
}
