package graphsim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

const graphContext = "https://graph.microsoft.com/v1.0/$metadata"

// userProps are the user properties the simulator knows, canonical
// spelling. Modelled ones come from User; the others are real Graph
// properties that read as null (or as what a PATCH stored) so that a
// $select naming them does not fail as it would for a typo.
var userProps = []string{
	"id", "userPrincipalName", "mail", "displayName", "onPremisesImmutableId", "onPremisesSyncEnabled",
	"accountEnabled", "passwordPolicies", "passwordProfile", "preferredLanguage",
	"lastPasswordChangeDateTime", "signInSessionsValidFromDateTime",
	// not modelled
	"businessPhones", "givenName", "surname", "jobTitle", "mobilePhone", "officeLocation", "usageLocation",
	"userType", "department", "companyName", "employeeId", "city", "country", "state", "streetAddress",
	"postalCode", "otherMails", "proxyAddresses", "mailNickname", "createdDateTime", "deletedDateTime",
	"onPremisesDistinguishedName", "onPremisesDomainName", "onPremisesSamAccountName",
	"onPremisesUserPrincipalName", "onPremisesSecurityIdentifier", "onPremisesLastSyncDateTime",
	"externalUserState", "creationType", "identities", "assignedLicenses",
}

// defaultUserProps are what GET /users/{id} returns without $select.
var defaultUserProps = []string{
	"businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
	"officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
}

// collectionProps read as [] rather than null when unset.
var collectionProps = map[string]bool{
	"businessPhones": true, "otherMails": true, "proxyAddresses": true, "identities": true, "assignedLicenses": true,
}

func knownUserProp(name string) (string, bool) {
	for _, p := range userProps {
		if strings.EqualFold(p, name) {
			return p, true
		}
	}
	return "", false
}

// userValue is a property as Graph serialises it: string, bool, object, or
// nil for null.
func (st *store) userValue(u *User, prop string) any {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	switch prop {
	case "id":
		return u.ID
	case "userPrincipalName":
		return u.UserPrincipalName
	case "mail":
		return str(u.Mail)
	case "displayName":
		return str(u.DisplayName)
	case "onPremisesImmutableId":
		return str(u.OnPremisesImmutableId)
	case "onPremisesSyncEnabled":
		if u.OnPremisesSyncEnabled {
			return true
		}
		return nil // cloud users read null, not false
	case "accountEnabled":
		return u.AccountEnabled
	case "passwordPolicies":
		return str(u.PasswordPolicies)
	case "preferredLanguage":
		return str(u.PreferredLanguage)
	case "passwordProfile":
		if !u.hasPasswordProfile() {
			return nil // never set (a synced user, say): null, not an object of falses
		}
		// The password itself is never readable.
		return map[string]any{
			"password":                             nil,
			"forceChangePasswordNextSignIn":        u.ForceChangePasswordNextSignIn,
			"forceChangePasswordNextSignInWithMfa": u.ForceChangePasswordNextSignInWithMfa,
		}
	case "lastPasswordChangeDateTime":
		return graphTime(u.LastPasswordChangeDateTime)
	case "signInSessionsValidFromDateTime":
		return graphTime(u.SignInSessionsValidFromDateTime)
	}
	if raw, ok := st.extra[u.ID][prop]; ok {
		return raw
	}
	if collectionProps[prop] {
		return []any{}
	}
	return nil
}

// graphTime formats a DateTimeOffset as Graph does (UTC, seconds); zero is null.
func graphTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// userObject renders a user with the given properties.
func (st *store) userObject(u *User, props []string) map[string]any {
	obj := make(map[string]any, len(props)+1)
	for _, p := range props {
		obj[p] = st.userValue(u, p)
	}
	return obj
}

// selectContext is the @odata.context suffix for a $select: "(a,b)".
func selectContext(props []string) string {
	if len(props) == 0 {
		return ""
	}
	return "(" + strings.Join(props, ",") + ")"
}

func queryErrorReply(err error) reply {
	if qe, ok := err.(*queryError); ok {
		return errorReply(http.StatusBadRequest, qe.code, qe.msg)
	}
	return errorReply(http.StatusBadRequest, codeODataBadRequest, err.Error())
}

// GET /users/{id | userPrincipalName}
func (s *Server) getUser(c *call) reply {
	sel, err := parseSelect(c.query.Get("$select"), knownUserProp)
	if err != nil {
		return queryErrorReply(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	props := sel
	if props == nil {
		props = defaultUserProps
	}
	obj := s.store.userObject(u, props)
	obj["@odata.context"] = graphContext + "#users" + selectContext(sel) + "/$entity"
	return jsonReply(http.StatusOK, obj)
}

const (
	defaultPageSize = 100
	maxPageSize     = 999
)

// GET /users with $filter, $select, $top, $count and paging by $skiptoken.
func (s *Server) listUsers(c *call) reply {
	sel, err := parseSelect(c.query.Get("$select"), knownUserProp)
	if err != nil {
		return queryErrorReply(err)
	}
	var filter filterExpr
	if raw := c.query.Get("$filter"); raw != "" {
		f, advanced, err := parseFilter(raw, knownUserProp)
		if err != nil {
			return queryErrorReply(err)
		}
		if advanced && !isAdvancedQuery(c) {
			return errorReply(http.StatusBadRequest, codeUnsupportedQuery,
				"Unsupported or invalid query filter clause specified for this request: ne, not and endsWith need the ConsistencyLevel: eventual header and $count=true.")
		}
		filter = f
	}
	top, skip, bad := pageOf(c)
	if bad != nil {
		return *bad
	}

	props := sel
	if props == nil {
		props = defaultUserProps
	}
	s.mu.Lock()
	var matched []*User
	if prop, val, ok := simpleEquality(c.query.Get("$filter")); ok {
		// The identity-join lookups go through an index: a scan costs a
		// millisecond in a 10,000-user tenant, once per user in a full sync.
		if u := s.store.lookupBy(prop, val); u != nil {
			matched = append(matched, u)
		}
	} else {
		for _, u := range s.store.list() {
			if filter == nil || filter(func(p string) any { return s.store.userValue(u, p) }) {
				matched = append(matched, u)
			}
		}
	}
	page := []map[string]any{}
	for i := skip; i < len(matched) && i < skip+top; i++ {
		page = append(page, s.store.userObject(matched[i], props))
	}
	s.mu.Unlock()

	out := map[string]any{
		"@odata.context": graphContext + "#users" + selectContext(sel),
		"value":          page,
	}
	if strings.EqualFold(c.query.Get("$count"), "true") {
		out["@odata.count"] = len(matched)
	}
	if skip+top < len(matched) {
		q := cloneValues(c.query)
		q.Set("$skiptoken", encodeSkipToken(skip+top))
		out["@odata.nextLink"] = c.base + "/users?" + q.Encode()
	}
	return jsonReply(http.StatusOK, out)
}

// simpleEquality recognises "prop eq 'value'" on the properties the store
// indexes.
func simpleEquality(filter string) (prop, val string, ok bool) {
	toks, err := tokenize(filter)
	if err != nil || len(toks) != 3 || !strings.EqualFold(toks[1], "eq") || !strings.HasPrefix(toks[2], "'") {
		return "", "", false
	}
	prop, _ = knownUserProp(toks[0])
	switch prop {
	case "id", "userPrincipalName", "onPremisesImmutableId":
		return prop, toks[2][1:], toks[2] != "'"
	}
	return "", "", false
}

func isAdvancedQuery(c *call) bool {
	return strings.EqualFold(c.header.Get("ConsistencyLevel"), "eventual") && strings.EqualFold(c.query.Get("$count"), "true")
}

// pageOf reads a list request's $top and $skiptoken; bad is the 400 to
// answer when either is invalid.
func pageOf(c *call) (top, skip int, bad *reply) {
	top = defaultPageSize
	if raw := c.query.Get("$top"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxPageSize {
			r := errorReply(http.StatusBadRequest, codeBadRequest, fmt.Sprintf("Invalid page size specified: '%s'. Must be between 1 and %d inclusive.", raw, maxPageSize))
			return 0, 0, &r
		}
		top = n
	}
	if raw := c.query.Get("$skiptoken"); raw != "" {
		n, ok := decodeSkipToken(raw)
		if !ok {
			r := errorReply(http.StatusBadRequest, codeBadRequest, "Invalid $skiptoken.")
			return 0, 0, &r
		}
		skip = n
	}
	return top, skip, nil
}

// Skip tokens are opaque to clients; this one is the offset.
func encodeSkipToken(n int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("graphsim:" + strconv.Itoa(n)))
}

func decodeSkipToken(t string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || !bytes.HasPrefix(b, []byte("graphsim:")) {
		return 0, false
	}
	n, err := strconv.Atoi(string(b[len("graphsim:"):]))
	return n, err == nil && n >= 0
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Writable user properties by kind. "mastered" ones are owned by on-prem AD
// for synced users (Entra Connect writes them); the rest are cloud-owned.
var (
	userStringProps   = map[string]bool{"displayName": true, "mail": true, "userPrincipalName": true, "onPremisesImmutableId": true, "preferredLanguage": true, "passwordPolicies": true}
	userReadOnlyProps = map[string]bool{"id": true, "onPremisesSyncEnabled": true, "lastPasswordChangeDateTime": true, "signInSessionsValidFromDateTime": true, "createdDateTime": true, "deletedDateTime": true, "onPremisesDistinguishedName": true, "onPremisesDomainName": true, "onPremisesSamAccountName": true, "onPremisesUserPrincipalName": true, "onPremisesSecurityIdentifier": true, "onPremisesLastSyncDateTime": true, "externalUserState": true, "creationType": true, "proxyAddresses": true, "assignedLicenses": true}
	cloudOwnedProps   = map[string]bool{"passwordPolicies": true, "usageLocation": true}
)

const onPremMastered = "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration."

// userPatch is a validated PATCH body.
type userPatch struct {
	strs        map[string]*string // modelled string properties; nil pointer = set to null
	enabled     *bool
	profile     *profilePatch
	extra       map[string]json.RawMessage // real but unmodelled properties, stored verbatim
	needsMaster bool                       // touches on-prem mastered properties
}

type profilePatch struct {
	password            *string
	force, forceWithMfa *bool
}

// parseUserPatch validates a PATCH /users body: unknown or read-only
// properties and wrong types are refused before anything changes.
func parseUserPatch(body []byte) (*userPatch, *reply) {
	if len(bytes.TrimSpace(body)) == 0 {
		r := badRequest("Empty Payload. JSON content expected.")
		return nil, &r
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		r := errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format: %v.", err))
		return nil, &r
	}
	invalid := func(prop string) (*userPatch, *reply) {
		r := badRequest(fmt.Sprintf("Invalid value specified for property '%s' of resource 'User'.", prop))
		return nil, &r
	}
	p := &userPatch{strs: map[string]*string{}, extra: map[string]json.RawMessage{}}
	for key, raw := range fields {
		if strings.HasPrefix(key, "@odata.") {
			continue // e.g. "@odata.type": "#microsoft.graph.user"
		}
		prop, ok := knownUserProp(key)
		switch {
		case !ok:
			r := badRequest(fmt.Sprintf("Property '%s' does not exist as a declared property or extension property.", key))
			return nil, &r
		case userReadOnlyProps[prop]:
			r := badRequest(fmt.Sprintf("Property '%s' is read-only and cannot be set.", prop))
			return nil, &r
		}
		if !cloudOwnedProps[prop] {
			p.needsMaster = true
		}
		switch {
		case userStringProps[prop]:
			var v *string
			if json.Unmarshal(raw, &v) != nil {
				return invalid(prop)
			}
			if v == nil && prop == "userPrincipalName" {
				return invalid(prop)
			}
			p.strs[prop] = v
		case prop == "accountEnabled":
			var v bool
			if json.Unmarshal(raw, &v) != nil {
				return invalid(prop)
			}
			p.enabled = &v
		case prop == "passwordProfile":
			pp, rep := parseProfile(raw)
			if rep != nil {
				return nil, rep
			}
			p.profile = pp
		default:
			p.extra[prop] = raw
		}
	}
	return p, nil
}

func parseProfile(raw json.RawMessage) (*profilePatch, *reply) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		r := badRequest("Invalid value specified for property 'passwordProfile' of resource 'User'.")
		return nil, &r
	}
	pp := &profilePatch{}
	for key, v := range fields {
		var err error
		switch key {
		case "password":
			err = json.Unmarshal(v, &pp.password)
		case "forceChangePasswordNextSignIn":
			err = json.Unmarshal(v, &pp.force)
		case "forceChangePasswordNextSignInWithMfa":
			err = json.Unmarshal(v, &pp.forceWithMfa)
		case "@odata.type":
		default:
			r := badRequest(fmt.Sprintf("Property '%s' does not exist as a declared property or extension property.", key))
			return nil, &r
		}
		if err != nil {
			r := badRequest(fmt.Sprintf("Invalid value specified for property 'passwordProfile.%s' of resource 'User'.", key))
			return nil, &r
		}
	}
	return pp, nil
}

// PATCH /users/{id | userPrincipalName}
func (s *Server) patchUser(c *call) reply {
	p, rep := parseUserPatch(c.body)
	if rep != nil {
		return *rep
	}
	if p.profile != nil && !hasAnyRole(c.claims.Roles, rolesPasswordWrite) {
		return errorReply(http.StatusForbidden, codeAuthDenied, "Insufficient privileges to complete the operation.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	if u.OnPremisesSyncEnabled && p.needsMaster {
		return badRequest(onPremMastered)
	}
	if p.profile != nil {
		if rep := s.checkPasswordWriter(u); rep != nil {
			return *rep
		}
	}
	policies := u.PasswordPolicies
	if v, ok := p.strs["passwordPolicies"]; ok {
		policies = deref(v)
	}
	if pp := p.profile; pp != nil && pp.password != nil && !strings.Contains(policies, "DisableStrongPassword") && !strongPassword(*pp.password) {
		return badRequest("The specified password does not comply with password complexity requirements. Please provide a different password.")
	}
	if v, ok := p.strs["userPrincipalName"]; ok && !strings.EqualFold(*v, u.UserPrincipalName) {
		if other := s.store.lookup(*v); other != nil && other.ID != u.ID {
			return badRequest("Another object with the same value for property userPrincipalName already exists.")
		}
	}

	// Validated: apply everything.
	before := s.store.snapshot(u)
	defer s.store.commit(u.ID, before)
	now := time.Now()
	for prop, v := range p.strs {
		switch prop {
		case "userPrincipalName":
			s.store.setUPN(u, *v)
			continue
		case "onPremisesImmutableId":
			s.store.setImmutableID(u, deref(v))
			continue
		}
		setUserString(u, prop, deref(v))
	}
	if p.enabled != nil {
		u.AccountEnabled = *p.enabled
	}
	for prop, raw := range p.extra {
		if s.store.extra[u.ID] == nil {
			s.store.extra[u.ID] = map[string]json.RawMessage{}
		}
		s.store.extra[u.ID][prop] = raw
	}
	if pp := p.profile; pp != nil {
		switch {
		case pp.password != nil:
			u.profileSet = true
			u.Password = *pp.password
			u.LastPasswordChangeDateTime = now
			// Omitting the flag with a new password means true (entra-powershell#1581).
			u.ForceChangePasswordNextSignIn = pp.force == nil || *pp.force
			u.ForceChangePasswordNextSignInWithMfa = pp.forceWithMfa != nil && *pp.forceWithMfa
		case s.noop:
			// microsoft-graph-docs#4267: 204, and nothing changes.
		default:
			u.profileSet = true
			if pp.force != nil {
				u.ForceChangePasswordNextSignIn = *pp.force
			}
			if pp.forceWithMfa != nil {
				u.ForceChangePasswordNextSignInWithMfa = *pp.forceWithMfa
			}
		}
	}
	return emptyReply(http.StatusNoContent)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func setUserString(u *User, prop, v string) {
	switch prop {
	case "displayName":
		u.DisplayName = v
	case "mail":
		u.Mail = v
	case "preferredLanguage":
		u.PreferredLanguage = v
	case "passwordPolicies":
		u.PasswordPolicies = v
	}
}

// strongPassword is Entra ID's default complexity: 8 to 256 characters and
// three of lowercase, uppercase, digits and symbols.
func strongPassword(pw string) bool {
	if n := len([]rune(pw)); n < 8 || n > 256 {
		return false
	}
	var lower, upper, digit, symbol int
	for _, r := range pw {
		switch {
		case unicode.IsLower(r):
			lower = 1
		case unicode.IsUpper(r):
			upper = 1
		case unicode.IsDigit(r):
			digit = 1
		default:
			symbol = 1
		}
	}
	return lower+upper+digit+symbol >= 3
}

// POST /users/{id | userPrincipalName}/revokeSignInSessions
func (s *Server) revokeSessions(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	before := s.store.snapshot(u)
	u.SignInSessionsValidFromDateTime = time.Now().UTC().Truncate(time.Second)
	s.store.commit(u.ID, before)
	// 200 with a boolean, not the 204 the docs once said (a known issue).
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#Edm.Boolean",
		"value":          true,
	})
}
