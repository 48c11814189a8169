package graphsim

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
