package graphsim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Delta query on users (GET /users/delta, also spelled /users/delta()):
// the first round lists every user, page by page (@odata.nextLink with
// $skiptoken), and ends with an @odata.deltaLink ($deltatoken); a round
// started from a deltaLink lists the users whose tracked properties
// changed since, and deleted users as {"id", "@removed"}. Only $select-ed
// properties are tracked (the default set without $select), as in Graph.

const (
	deltaPageSize = 100
	maxDeltaIDs   = 50 // Graph's limit for $filter=id eq '...' or ...
	// deltaTokenLifetime is how long identity delta tokens stay usable.
	deltaTokenLifetime = 7 * 24 * time.Hour
)

// deltaState is what a skip or delta token carries: the first request's
// query options (later requests must not repeat them) and the round's
// position. Tokens are opaque to clients.
type deltaState struct {
	Sel    []string `json:"s,omitempty"` // $select; nil = default properties
	IDs    []string `json:"i,omitempty"` // $filter=id eq ... ; nil = all users
	Full   bool     `json:"a,omitempty"` // the first round: every user
	Since  uint64   `json:"f"`           // changes after this sequence number...
	Upto   uint64   `json:"u"`           // ...up to this one (fixed when the round starts)
	After  string   `json:"k,omitempty"` // last user ID on the previous page
	Gen    uint64   `json:"g"`           // ExpireDeltaTokens generation
	Issued int64    `json:"t"`           // when the round's token was issued
}

func encodeDelta(st deltaState) string {
	b, _ := json.Marshal(st) // plain struct: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeDelta(tok string) (deltaState, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return deltaState{}, false
	}
	var st deltaState
	return st, json.Unmarshal(b, &st) == nil
}

// ExpireDeltaTokens makes every issued skip and delta token fail as an
// expired one does (400 syncStateNotFound; 410 resyncRequired with
// Options.ExpiredDeltaGone), to test full resyncs.
func (s *Server) ExpireDeltaTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deltaGen++
}

// GET /users/delta
func (s *Server) userDelta(c *call) reply {
	st, rep := s.deltaStart(c)
	if rep != nil {
		return *rep
	}
	minimal := preferMinimal(c.header) && !st.Full
	pageSize := preferPageSize(c.header, deltaPageSize)

	s.mu.Lock()
	if st.Gen != s.deltaGen || time.Since(time.Unix(st.Issued, 0)) > deltaTokenLifetime {
		s.mu.Unlock()
		if s.opts.ExpiredDeltaGone {
			return errorReply(http.StatusGone, "resyncRequired", "The delta token is no longer valid and data must be synchronized again.")
		}
		// Identity resources: 400 BadRequest, code syncStateNotFound (devblogs
		// "Duration of change tracking tokens for identity and education resources").
		return errorReply(http.StatusBadRequest, "syncStateNotFound", "The sync state generation is not found. The delta token is expired and data must be synchronized again.")
	}
	if st.Upto == 0 { // a new round: it covers changes up to now
		st.Upto = s.store.seq
	}
	tracked := st.Sel
	if tracked == nil {
		tracked = defaultUserProps
	}
	rows, more := s.deltaRows(st, tracked, pageSize, minimal)
	s.mu.Unlock()

	out := map[string]any{
		"@odata.context": graphContext + "#users" + selectContext(st.Sel),
		"value":          rows,
	}
	if more != "" {
		next := st
		next.After = more
		out["@odata.nextLink"] = c.base + "/users/delta?$skiptoken=" + encodeDelta(next)
	} else {
		next := deltaState{Sel: st.Sel, IDs: st.IDs, Since: st.Upto, Gen: st.Gen, Issued: time.Now().Unix()}
		out["@odata.deltaLink"] = c.base + "/users/delta?$deltatoken=" + encodeDelta(next)
	}
	return jsonReply(http.StatusOK, out)
}

// deltaStart reads the round's state from a token, or from the query
// options of a first request.
func (s *Server) deltaStart(c *call) (deltaState, *reply) {
	fail := func(status int, code, msg string) (deltaState, *reply) {
		r := errorReply(status, code, msg)
		return deltaState{}, &r
	}
	for _, name := range []string{"$skiptoken", "$deltatoken"} {
		tok := c.query.Get(name)
		if tok == "" || tok == "latest" {
			continue
		}
		st, ok := decodeDelta(tok)
		if !ok {
			return fail(http.StatusBadRequest, codeBadRequest, "Badly formed token.")
		}
		return st, nil
	}
	sel, err := parseSelect(c.query.Get("$select"), knownUserProp)
	if err != nil {
		r := queryErrorReply(err)
		return deltaState{}, &r
	}
	ids, err := parseIDFilter(c.query.Get("$filter"))
	if err != nil {
		r := queryErrorReply(err)
		return deltaState{}, &r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := deltaState{Sel: sel, IDs: ids, Full: true, Gen: s.deltaGen, Issued: time.Now().Unix()}
	if c.query.Get("$deltatoken") == "latest" {
		// "Sync from now": an empty round that ends at the current state.
		st.Full, st.Since, st.Upto = false, s.store.seq, s.store.seq
	}
	return st, nil
}

// parseIDFilter accepts the one $filter delta supports on users:
// id eq '...' [or id eq '...'] (up to 50 IDs).
func parseIDFilter(raw string) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var ids []string
	for _, clause := range strings.Split(raw, " or ") {
		f := strings.Fields(clause)
		if len(f) != 3 || !strings.EqualFold(f[0], "id") || !strings.EqualFold(f[1], "eq") ||
			len(f[2]) < 2 || f[2][0] != '\'' || f[2][len(f[2])-1] != '\'' {
			return nil, &queryError{codeUnsupportedQuery, "Unsupported query: delta on users supports only $filter=id eq '{id}' [or id eq '{id}' ...]."}
		}
		ids = append(ids, strings.ToLower(f[2][1:len(f[2])-1]))
	}
	if len(ids) > maxDeltaIDs {
		return nil, &queryError{codeUnsupportedQuery, fmt.Sprintf("Unsupported query: at most %d ids in a delta $filter.", maxDeltaIDs)}
	}
	return ids, nil
}

// deltaRows returns one page of the round, in user ID order, and the last
// ID on it when more follow. Paging by ID rather than offset means a user
// that changes again mid-round (and so moves to the next round) does not
// make the page boundary skip another one.
func (s *Server) deltaRows(st deltaState, tracked []string, pageSize int, minimal bool) ([]map[string]any, string) {
	type entry struct {
		id      string
		removed bool
	}
	var entries []entry
	inScope := func(id string) bool { return st.IDs == nil || slices.Contains(st.IDs, strings.ToLower(id)) }
	for id := range s.store.users {
		if inScope(id) && (st.Full || s.changedIn(id, tracked, st.Since, st.Upto)) {
			entries = append(entries, entry{id: id})
		}
	}
	if !st.Full {
		for id, seq := range s.store.removed {
			if _, back := s.store.users[id]; !back && seq > st.Since && seq <= st.Upto && inScope(id) {
				entries = append(entries, entry{id: id, removed: true})
			}
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.id, b.id) })

	rows := []map[string]any{}
	for _, e := range entries {
		if e.id <= st.After && st.After != "" {
			continue
		}
		if len(rows) == pageSize {
			return rows, rows[len(rows)-1]["id"].(string)
		}
		if e.removed {
			// "changed": soft-deleted (restorable); "deleted": permanently.
			reason := "changed"
			if s.store.purged[e.id] {
				reason = "deleted"
			}
			rows = append(rows, map[string]any{"id": e.id, "@removed": map[string]string{"reason": reason}})
			continue
		}
		props := tracked
		if minimal {
			props = s.changedProps(e.id, tracked, st.Since)
		}
		// "If the property has never been set before it will not be
		// included in the response" (user: delta): absent is not null.
		set := s.store.everSet[e.id]
		props = slices.DeleteFunc(slices.Clone(props), func(p string) bool { return !set[p] })
		row := s.store.userObject(s.store.users[e.id], props)
		row["id"] = e.id // always present, selected or not
		rows = append(rows, row)
	}
	return rows, ""
}

// changedIn reports whether a tracked property (or the user's creation)
// changed in (since, upto].
func (s *Server) changedIn(id string, tracked []string, since, upto uint64) bool {
	seqs := s.store.propSeq[id]
	in := func(q uint64) bool { return q > since && q <= upto }
	if in(seqs[createdKey]) {
		return true
	}
	return slices.ContainsFunc(tracked, func(p string) bool { return in(seqs[p]) })
}

// changedProps lists the tracked properties changed after since, for
// Prefer: return=minimal (a new user has them all).
func (s *Server) changedProps(id string, tracked []string, since uint64) []string {
	seqs := s.store.propSeq[id]
	if seqs[createdKey] > since {
		return tracked
	}
	var out []string
	for _, p := range tracked {
		if seqs[p] > since {
			out = append(out, p)
		}
	}
	return out
}

// preferMinimal reports Prefer: return=minimal.
func preferMinimal(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "return=minimal") {
				return true
			}
		}
	}
	return false
}

// preferPageSize reads Prefer: odata.maxpagesize=N.
func preferPageSize(h http.Header, def int) int {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(k, "odata.maxpagesize") {
				if n, err := strconv.Atoi(val); err == nil && n > 0 {
					return min(n, maxPageSize)
				}
			}
		}
	}
	return def
}

// DELETE /users/{id | userPrincipalName}: Graph's soft delete.
func (s *Server) deleteUser(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	if u.OnPremisesSyncEnabled {
		return badRequest(onPremMastered)
	}
	s.store.remove(u, false)
	return emptyReply(http.StatusNoContent)
}

// DeleteUser deletes a user as an admin or a sync run would (synced users
// included): Graph's soft delete. For tests; false when there is no such
// user.
func (s *Server) DeleteUser(idOrUPN string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(idOrUPN)
	if u == nil {
		return false
	}
	s.store.remove(u, false)
	return true
}

// PurgeUser deletes a user permanently (a hard delete, or the purge of a
// soft-deleted one, by object ID): change notifications say "deleted" and
// delta @removed reason "deleted". False when there is no such user.
func (s *Server) PurgeUser(idOrUPN string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.store.lookup(idOrUPN); u != nil {
		s.store.remove(u, true)
		return true
	}
	if _, gone := s.store.removed[idOrUPN]; gone && !s.store.purged[idOrUPN] {
		s.store.markRemoved(idOrUPN, true)
		return true
	}
	return false
}
