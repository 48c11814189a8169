package graphsim

import (
	"encoding/json"
	"net/http"
	"slices"
)

// POST /users/{id}/checkMemberGroups {"groupIds": [...]}: the ids among
// groupIds of the groups the user is in, directly or through nested groups
// (user: checkMemberGroups, v1.0; at most 20 groups per request). It reads,
// so it is neither a write nor an effect, although it is a POST.
func (s *Server) checkMemberGroups(c *call) reply {
	var body struct {
		GroupIDs []string `json:"groupIds"`
	}
	if err := json.Unmarshal(c.body, &body); err != nil || body.GroupIDs == nil {
		return badRequest("The request body must carry 'groupIds', the list of group ids to check.")
	}
	if len(body.GroupIDs) > 20 {
		return badRequest("At most 20 group ids can be checked per request.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	value := []string{}
	for _, id := range body.GroupIDs {
		if g := s.store.group(id); g != nil && slices.Contains(s.store.transitiveUserIDs(g), u.ID) {
			value = append(value, g.id)
		}
	}
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#Collection(Edm.String)",
		"value":          value,
	})
}
