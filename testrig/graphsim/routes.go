package graphsim

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	graphPrefix  = "/v1.0"
	betaPrefix   = "/beta" // betaRoutes only (riskpolicy.go)
	maxBodyBytes = 4 << 20 // Graph refuses request bodies above 4 MB
)

// call is one Graph request, standalone or a $batch item: everything a
// handler needs, independent of the wire.
type call struct {
	method   string
	path     string     // full path, "/v1.0/users/{id}"
	segs     []string   // path segments after /v1.0 (or /beta)
	beta     bool       // under /beta: routed by betaRoutes
	vars     []string   // values of the route's {placeholders}, in order
	query    url.Values // parsed query
	rawQuery string
	header   http.Header
	body     []byte // decompressed
	claims   accessClaims
	base     string // "https://host/v1.0": links (nextLink) point back here
	batchID  string
	itemID   string
	arrived  time.Time
	done     <-chan struct{} // closed when the client goes away
}

// handler answers a routed call. It runs without the Server lock held.
type handler func(s *Server, c *call) reply

type route struct {
	method  string
	pattern []string // literal segments, or "{}" for a variable
	write   bool     // counts against the identity write budget (subscriptions have their own limits)
	roles   []string // any one of these app roles is required
	handle  handler
}

// App roles accepted per operation: the least privileged and the broader
// ones that include it.
var (
	rolesUserRead      = []string{"User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	rolesUserWrite     = []string{"User.ReadUpdate.All", "User.ReadWrite.All", "Directory.ReadWrite.All"}
	rolesUserDelete    = []string{"User.ReadWrite.All", "Directory.ReadWrite.All"}
	rolesPasswordWrite = []string{"User-PasswordProfile.ReadWrite.All", "Directory.ReadWrite.All"}
	rolesRevoke        = []string{"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"}
	rolesGroupRead     = []string{"GroupMember.Read.All", "GroupMember.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	rolesMailSend      = []string{"Mail.Send"}
	rolesActivitySend  = []string{"TeamsActivity.Send", "TeamsActivity.Send.User"}
	rolesMemberWrite   = []string{"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"}
)

// routes is the Graph surface. Literal routes come before variable ones
// where they overlap (/users/delta before /users/{id}).
var routes = []route{
	{method: "GET", pattern: segs("/users"), roles: rolesUserRead, handle: (*Server).listUsers},
	{method: "GET", pattern: segs("/users/delta"), roles: rolesUserRead, handle: (*Server).userDelta},
	{method: "GET", pattern: segs("/users/delta()"), roles: rolesUserRead, handle: (*Server).userDelta}, // the SDK's spelling
	{method: "GET", pattern: segs("/users/{}"), roles: rolesUserRead, handle: (*Server).getUser},
	{method: "PATCH", pattern: segs("/users/{}"), write: true, roles: rolesUserWrite, handle: (*Server).patchUser},
	{method: "DELETE", pattern: segs("/users/{}"), write: true, roles: rolesUserDelete, handle: (*Server).deleteUser},
	{method: "POST", pattern: segs("/users/{}/revokeSignInSessions"), write: true, roles: rolesRevoke, handle: (*Server).revokeSessions},
	{method: "POST", pattern: segs("/users/{}/checkMemberGroups"), roles: rolesGroupRead, handle: (*Server).checkMemberGroups},
	{method: "POST", pattern: segs("/users/{}/sendMail"), roles: rolesMailSend, handle: (*Server).sendMail},
	{method: "POST", pattern: segs("/users/{}/teamwork/sendActivityNotification"), roles: rolesActivitySend, handle: (*Server).sendActivity},
	{method: "POST", pattern: segs("/subscriptions"), roles: rolesUserRead, handle: (*Server).createSubscription},
	{method: "GET", pattern: segs("/subscriptions"), roles: rolesUserRead, handle: (*Server).listSubscriptions},
	{method: "GET", pattern: segs("/subscriptions/{}"), roles: rolesUserRead, handle: (*Server).getSubscription},
	{method: "PATCH", pattern: segs("/subscriptions/{}"), roles: rolesUserRead, handle: (*Server).patchSubscription},
	{method: "DELETE", pattern: segs("/subscriptions/{}"), roles: rolesUserRead, handle: (*Server).deleteSubscription},
	{method: "POST", pattern: segs("/subscriptions/{}/reauthorize"), roles: rolesUserRead, handle: (*Server).reauthorizeSubscription},
	{method: "GET", pattern: segs("/domains"), roles: rolesDomainRead, handle: (*Server).listDomains},
	{method: "GET", pattern: segs("/domains/{}"), roles: rolesDomainRead, handle: (*Server).getDomain},
	{method: "PATCH", pattern: segs("/domains/{}"), write: true, roles: rolesDomainWrite, handle: (*Server).patchDomain},
	{method: "GET", pattern: segs("/directory/onPremisesSynchronization"), roles: rolesSyncRead, handle: (*Server).listSync},
	{method: "GET", pattern: segs("/directory/onPremisesSynchronization/{}"), roles: rolesSyncRead, handle: (*Server).getSync},
	{method: "PATCH", pattern: segs("/directory/onPremisesSynchronization/{}"), write: true, roles: rolesSyncWrite, handle: (*Server).patchSync},
	{method: "GET", pattern: segs("/servicePrincipals(appId='{}')"), roles: rolesSPRead, handle: (*Server).getServicePrincipal},
	{method: "GET", pattern: segs("/roleManagement/directory/roleAssignments"), roles: rolesRoleRead, handle: (*Server).listRoleAssignments},
	{method: "GET", pattern: segs("/groups/{}"), roles: rolesGroupRead, handle: (*Server).getGroup},
	{method: "GET", pattern: segs("/groups/{}/members"), roles: rolesGroupRead, handle: (*Server).listMembers},
	{method: "GET", pattern: segs("/groups/{}/transitiveMembers"), roles: rolesGroupRead, handle: (*Server).listTransitiveMembers},
	{method: "GET", pattern: segs("/groups/{}/transitiveMembers/microsoft.graph.user"), roles: rolesGroupRead, handle: (*Server).listTransitiveMembers},
	{method: "POST", pattern: segs("/groups/{}/members/$ref"), write: true, roles: rolesMemberWrite, handle: (*Server).addMember},
	{method: "DELETE", pattern: segs("/groups/{}/members/{}/$ref"), write: true, roles: rolesMemberWrite, handle: (*Server).removeMember},
	// Identity Protection (risk.go)
	{method: "GET", pattern: segs("/identityProtection/riskyUsers"), roles: rolesRiskyUserRead, handle: (*Server).listRiskyUsers},
	{method: "POST", pattern: segs("/identityProtection/riskyUsers/dismiss"), roles: rolesRiskyUserWrite, handle: (*Server).dismissRiskyUsers},
	{method: "POST", pattern: segs("/identityProtection/riskyUsers/confirmCompromised"), roles: rolesRiskyUserWrite, handle: (*Server).confirmCompromised},
	{method: "GET", pattern: segs("/identityProtection/riskyUsers/{}"), roles: rolesRiskyUserRead, handle: (*Server).getRiskyUser},
	{method: "GET", pattern: segs("/identityProtection/riskDetections"), roles: rolesRiskEventRead, handle: (*Server).listRiskDetections},
	{method: "GET", pattern: segs("/identityProtection/riskDetections/{}"), roles: rolesRiskEventRead, handle: (*Server).getRiskDetection},
}

func segs(p string) []string {
	out := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range out {
		if strings.HasPrefix(s, "{") {
			out[i] = "{}"
		}
	}
	return out
}

// match reports whether path segments fit a pattern (literals compare
// case-insensitively, as Graph's do) and returns the variables.
func match(pattern, path []string) ([]string, bool) {
	if len(pattern) != len(path) {
		return nil, false
	}
	var vars []string
	for i, p := range pattern {
		switch {
		case p == "{}":
			if path[i] == "" {
				return nil, false
			}
			vars = append(vars, path[i])
		case strings.Contains(p, "{}"):
			// A key inside a segment, e.g. servicePrincipals(appId='{}').
			pre, suf, _ := strings.Cut(p, "{}")
			seg := path[i]
			if len(seg) <= len(pre)+len(suf) || !strings.EqualFold(seg[:len(pre)], pre) || !strings.EqualFold(seg[len(seg)-len(suf):], suf) {
				return nil, false
			}
			vars = append(vars, seg[len(pre):len(seg)-len(suf)])
		case !strings.EqualFold(p, path[i]):
			return nil, false
		}
	}
	return vars, true
}

// ServeHTTP routes login endpoints, Graph v1.0 and the few beta routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, prefix := range []string{graphPrefix, betaPrefix} {
		if r.URL.Path == prefix || strings.HasPrefix(r.URL.Path, prefix+"/") {
			s.serveGraph(w, r, prefix)
			return
		}
	}
	if f, ok := s.takeFault(r.Method, r.URL.Path); ok {
		if s.wireFault(w, r, f) {
			return
		}
	}
	if !s.serveIdentity(w, r) {
		s.aadError(w, http.StatusNotFound, "invalid_request", 900561, fmt.Sprintf("The endpoint %s is not served by this simulator.", r.URL.Path))
	}
}

// wireFault applies a fault to a standalone request. It returns false
// when the fault only delayed the request, which then proceeds.
func (s *Server) wireFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	s.hang(r.Context().Done(), f.Hang)
	switch {
	case f.Reset:
		resetConn(w)
		return true
	case f.Status > 0:
		rep := faultReply(f)
		s.finish(&rep, r.Header.Get("client-request-id"))
		writeReply(w, rep)
		return true
	}
	return false
}

// resetConn drops the connection without an answer: a hijacked HTTP/1.1
// connection is closed; HTTP/2, which cannot be hijacked, gets its stream
// reset by the server when the handler aborts.
func resetConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close() // the point is to close it
			return
		}
	}
	panic(http.ErrAbortHandler)
}

func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request, prefix string) {
	c := &call{
		method:   r.Method,
		path:     r.URL.Path,
		rawQuery: r.URL.RawQuery,
		query:    r.URL.Query(),
		header:   r.Header.Clone(),
		base:     "https://" + r.Host + prefix,
		beta:     prefix == betaPrefix,
		arrived:  time.Now(),
		done:     r.Context().Done(),
	}
	c.segs = splitPath(strings.TrimPrefix(r.URL.Path, prefix))
	entry := func(status int) Request {
		return Request{Time: c.arrived, Method: c.method, Path: c.path, Query: c.rawQuery, Header: c.header,
			Body: c.body, Status: status, BatchID: c.batchID, Duration: time.Since(c.arrived)}
	}

	body, rep := readBody(r)
	c.body = body
	if d := time.Duration(s.latency.Load()); d > 0 {
		s.hang(c.done, d)
	}
	var after *Fault // lost after the request is carried out
	if rep == nil {
		if f, ok := s.takeFault(c.method, c.path); ok && f.After {
			after = &f
		} else if ok {
			if f.Hang > 0 {
				s.held(entry(0))
			}
			s.hang(c.done, f.Hang)
			switch {
			case f.Reset:
				// Logged with status 0: the request arrived, nothing was answered.
				notify := s.logRequest(entry(0))
				defer notify()
				resetConn(w)
				return
			case f.Status > 0:
				fr := faultReply(f)
				rep = &fr
			}
		}
	}
	if rep == nil {
		claims, deny := s.bearerClaims(r.Header)
		c.claims, rep = claims, deny
	}
	if rep == nil {
		var out reply
		if len(c.segs) == 1 && c.segs[0] == "$batch" && !c.beta {
			c.batchID = newGUID()
			out = s.serveBatch(c)
		} else {
			out = s.graphCall(c)
		}
		rep = &out
	}
	if after != nil {
		if after.Hang > 0 {
			s.held(entry(0))
		}
		s.hang(c.done, after.Hang)
		switch {
		case after.Reset:
			notify := s.logRequest(entry(0))
			defer notify()
			resetConn(w)
			return
		case after.Status > 0:
			fr := faultReply(*after)
			rep = &fr
		}
	}
	s.finish(rep, r.Header.Get("client-request-id"))
	notify := s.logRequest(entry(rep.status))
	writeReply(w, *rep)
	notify()
}

// readBody reads the request body, decompressing gzip as the Graph SDKs
// send it. A non-nil reply is the error to answer.
func readBody(r *http.Request) ([]byte, *reply) {
	if r.Body == nil {
		return nil, nil
	}
	var src io.Reader = http.MaxBytesReader(nil, r.Body, maxBodyBytes)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			rep := errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Invalid gzip request body: %v.", err))
			return nil, &rep
		}
		defer zr.Close()
		src = io.LimitReader(zr, maxBodyBytes+1) // a gzip bomb stops here
	default:
		// kiota's compression handler retries uncompressed on 415.
		rep := errorReply(http.StatusUnsupportedMediaType, codeUnsupportedMedia, fmt.Sprintf("Content-Encoding '%s' is not supported.", enc))
		return nil, &rep
	}
	b, err := io.ReadAll(src)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || len(b) > maxBodyBytes:
		rep := errorReply(http.StatusRequestEntityTooLarge, codeODataBadRequest, "The request body is larger than 4 MB.")
		return nil, &rep
	case err != nil:
		rep := errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Unable to read the request body: %v.", err))
		return nil, &rep
	}
	return b, nil
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// graphCall routes an authenticated call (standalone or $batch item) and
// applies permissions and the write budget.
func (s *Server) graphCall(c *call) reply {
	var found *route
	pathKnown := false
	table := routes
	if c.beta {
		table = betaRoutes
	}
	for i := range table {
		vars, ok := match(table[i].pattern, c.segs)
		if !ok {
			continue
		}
		pathKnown = true
		if table[i].method == c.method {
			found, c.vars = &table[i], vars
			break
		}
	}
	switch {
	case found == nil && pathKnown:
		return errorReply(http.StatusMethodNotAllowed, codeMethodNotAllowed, "Specified HTTP method is not allowed for the request target.")
	case found == nil:
		seg := ""
		if len(c.segs) > 0 {
			seg = c.segs[len(c.segs)-1]
		}
		return errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Resource not found for the segment '%s'.", seg))
	}
	if !hasAnyRole(c.claims.Roles, found.roles) {
		return errorReply(http.StatusForbidden, codeAuthDenied, "Insufficient privileges to complete the operation.")
	}
	usage := 0.0
	units := resourceUnits(c, found)
	now := time.Now()
	if identityRoute(found) {
		// Reads are throttled too: every identity request spends resource
		// units of the app+tenant's quota.
		s.resourceUnits.set(s.resourceUnitLimit(), durationOr(s.opts.ResourceUnitWindow, DefaultResourceUnitWindow))
		if ok, wait, _ := s.resourceUnits.takeN(c.claims.AppID+"/"+c.claims.Tid, now, units, true); !ok {
			s.countWrite(true)
			return throttledReplyScope(wait, "Tenant_Application/ReadWrite", "ResourceUnitLimitExceeded", c.claims.AppID, c.claims.Tid)
		}
	}
	if found.write {
		// The tenant's quota (all apps) first, without spending: a write
		// the app's own quota refuses must not use up the tenant's.
		if ok, wait, _ := s.tenantWrites.takeN(c.claims.Tid, now, 1, false); !ok {
			s.countWrite(true)
			return throttledReplyScope(wait, "Tenant/Write", "WriteLimitExceeded", c.claims.AppID, c.claims.Tid)
		}
		ok, wait, u := s.budget.take(c.claims.AppID+"/"+c.claims.Tid, now)
		s.countWrite(!ok)
		if !ok {
			return throttledReply(wait, c.claims.AppID, c.claims.Tid)
		}
		s.tenantWrites.take(c.claims.Tid, now)
		usage = u
	}
	rep := found.handle(s, c)
	s.recordEffect(c, rep)
	if rep.status >= 200 && rep.status < 300 {
		rep.setHeader("x-ms-resource-unit", strconv.Itoa(units))
		if p, ok := usagePercent(usage); ok {
			rep.setHeader("x-ms-throttle-limit-percentage", p)
		}
	}
	return rep
}

// identityRoute reports whether a route is an identity and access one
// (users, groups, domains, directory, service principals, role
// management), which share the resource-unit quota; mail, Teams and
// subscriptions have limits of their own.
func identityRoute(rt *route) bool {
	if strings.HasPrefix(rt.pattern[0], "servicePrincipals") {
		return true
	}
	switch rt.pattern[0] {
	case "users", "groups", "domains", "directory", "roleManagement":
		last := rt.pattern[len(rt.pattern)-1]
		return last != "sendMail" && last != "sendActivityNotification"
	}
	return false
}

func hasAnyRole(have, want []string) bool {
	return slices.ContainsFunc(want, func(w string) bool {
		return slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) })
	})
}

// resourceUnits is the documented identity cost: writes 1, GET of the user
// collection 2, other GETs 1; $select takes one off, never below 1.
func resourceUnits(c *call, rt *route) int {
	if rt.write {
		return 1
	}
	cost := 1
	if len(rt.pattern) == 1 && rt.pattern[0] == "users" {
		cost = 2
	}
	if c.query.Has("$select") {
		cost--
	}
	return max(cost, 1)
}

// finish adds the headers Graph puts on every answer and stamps the error
// envelope's innerError.
func (s *Server) finish(r *reply, clientRequestID string) {
	requestID := newGUID()
	if clientRequestID == "" {
		clientRequestID = requestID
	}
	if r.status >= 400 && len(r.body) > 0 {
		r.body = withInnerError(r.body, requestID, clientRequestID, time.Now())
	}
	r.setHeader("request-id", requestID)
	r.setHeader("client-request-id", clientRequestID)
	r.setHeader("Cache-Control", "no-cache")
	r.setHeader("Strict-Transport-Security", "max-age=31536000")
	r.setHeader("x-ms-ags-diagnostic", `{"ServerInfo":{"DataCenter":"Local","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"graphsim"}}`)
}

func writeReply(w http.ResponseWriter, r reply) {
	h := w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	w.WriteHeader(r.status)
	if len(r.body) > 0 {
		_, _ = w.Write(r.body) // the client may be gone; nothing to do about it
	}
}
