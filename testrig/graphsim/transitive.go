package graphsim

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// AddNestedGroup makes group child a member of group parent (both must
// exist), for test setup: transitiveMembers of parent then includes child's
// members.
func (s *Server) AddNestedGroup(parentID, childID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, c := s.store.group(parentID), s.store.group(childID)
	if p == nil || c == nil {
		return fmt.Errorf("graphsim: no group %q or %q", parentID, childID)
	}
	if p.groups == nil {
		p.groups = map[string]bool{}
	}
	p.groups[c.id] = true
	return nil
}

// transitiveUserIDs are the users in g and its nested groups, sorted;
// cycles are followed once.
func (st *store) transitiveUserIDs(g *group) []string {
	seen := map[string]bool{g.id: true}
	users := map[string]bool{}
	queue := []*group{g}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for id := range cur.members {
			users[id] = true
		}
		for id := range cur.groups {
			if sub := st.group(id); sub != nil && !seen[sub.id] {
				seen[sub.id] = true
				queue = append(queue, sub)
			}
		}
	}
	ids := make([]string, 0, len(users))
	for id := range users {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// GET /groups/{id}/transitiveMembers[/microsoft.graph.user]: the member
// users, nested groups followed, with $select, $top and paging. Only users
// are modelled, so the cast changes nothing but the context.
func (s *Server) listTransitiveMembers(c *call) reply {
	sel, err := parseSelect(c.query.Get("$select"), knownUserProp)
	if err != nil {
		return queryErrorReply(err)
	}
	props := sel
	if props == nil {
		props = defaultUserProps
	}
	top, skip, bad := pageOf(c)
	if bad != nil {
		return *bad
	}
	s.mu.Lock()
	g := s.store.group(c.vars[0])
	if g == nil {
		s.mu.Unlock()
		return notFound(c.vars[0])
	}
	ids := s.store.transitiveUserIDs(g)
	value := []map[string]any{}
	for i := skip; i < len(ids) && i < skip+top; i++ {
		if u := s.store.users[ids[i]]; u != nil {
			obj := s.store.userObject(u, props)
			obj["@odata.type"] = "#microsoft.graph.user"
			value = append(value, obj)
		}
	}
	s.mu.Unlock()
	out := map[string]any{"@odata.context": graphContext + "#users" + selectContext(sel), "value": value}
	if skip+top < len(ids) {
		q := cloneValues(c.query)
		q.Set("$skiptoken", encodeSkipToken(skip+top))
		out["@odata.nextLink"] = c.base + "/" + strings.Join(c.segs, "/") + "?" + q.Encode()
	}
	return jsonReply(http.StatusOK, out)
}
