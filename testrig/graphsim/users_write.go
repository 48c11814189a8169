// Writing users: PATCH /users/{id} (passwordProfile, passwordPolicies, string
// properties) and revokeSignInSessions.

package graphsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
)

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
