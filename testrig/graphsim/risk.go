package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Entra ID Protection: /identityProtection/riskyUsers and riskDetections
// (docs/graph-fidelity.md, "Identity Protection"). Shapes follow the
// riskyUser and riskDetection resource types; dismiss and
// confirmCompromised take {"userIds": [...]} and answer 204. Neither
// resource is among those change notifications support, so clients poll.
// Without Entra ID P2 (SetRiskLicensed(false)) every call answers 403.

// Risk levels, states and details (Graph's enum values).
const (
	RiskLevelNone   = "none"
	RiskLevelLow    = "low"
	RiskLevelMedium = "medium"
	RiskLevelHigh   = "high"

	RiskStateAtRisk               = "atRisk"
	RiskStateRemediated           = "remediated"
	RiskStateDismissed            = "dismissed"
	RiskStateConfirmedCompromised = "confirmedCompromised"
	RiskStateNone                 = "none"

	RiskDetailNone                          = "none"
	RiskDetailAdminDismissedAllRiskForUser  = "adminDismissedAllRiskForUser"
	RiskDetailAdminConfirmedUserCompromised = "adminConfirmedUserCompromised"
	RiskDetailUserChangedPasswordOnPremises = "userChangedPasswordOnPremises"
)

// App roles of the risk APIs (least privileged first).
var (
	rolesRiskyUserRead  = []string{"IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All"}
	rolesRiskyUserWrite = []string{"IdentityRiskyUser.ReadWrite.All"}
	rolesRiskEventRead  = []string{"IdentityRiskEvent.Read.All", "IdentityRiskEvent.ReadWrite.All"}
)

// RiskRoles are the application roles pwsync's risk reader needs, and the
// write one for dismiss: add them to Options.Roles.
var RiskRoles = []string{"IdentityRiskyUser.ReadWrite.All", "IdentityRiskEvent.Read.All"}

// riskMaxIDs is the most userIds one dismiss or confirmCompromised takes
// (the documented limit is 60).
const riskMaxIDs = 60

// RiskyUser is a simulated riskyUser.
type RiskyUser struct {
	ID                      string    `json:"id"`
	IsDeleted               bool      `json:"isDeleted"`
	IsProcessing            bool      `json:"isProcessing"`
	RiskLastUpdatedDateTime time.Time `json:"riskLastUpdatedDateTime"`
	RiskLevel               string    `json:"riskLevel"`
	RiskState               string    `json:"riskState"`
	RiskDetail              string    `json:"riskDetail"`
	UserDisplayName         string    `json:"userDisplayName"`
	UserPrincipalName       string    `json:"userPrincipalName"`
}

// RiskDetection is a simulated riskDetection.
type RiskDetection struct {
	ID                  string    `json:"id"`
	RequestID           string    `json:"requestId"`
	CorrelationID       string    `json:"correlationId"`
	RiskEventType       string    `json:"riskEventType"`
	RiskState           string    `json:"riskState"`
	RiskLevel           string    `json:"riskLevel"`
	RiskDetail          string    `json:"riskDetail"`
	Source              string    `json:"source"`
	DetectionTimingType string    `json:"detectionTimingType"`
	Activity            string    `json:"activity"`
	TokenIssuerType     string    `json:"tokenIssuerType"`
	IPAddress           string    `json:"ipAddress"`
	ActivityDateTime    time.Time `json:"activityDateTime"`
	DetectedDateTime    time.Time `json:"detectedDateTime"`
	LastUpdatedDateTime time.Time `json:"lastUpdatedDateTime"`
	UserID              string    `json:"userId"`
	UserDisplayName     string    `json:"userDisplayName"`
	UserPrincipalName   string    `json:"userPrincipalName"`
	AdditionalInfo      string    `json:"additionalInfo"`
}

// riskState is the simulator's Identity Protection. It has its own lock:
// handlers take it after the directory's when both are needed.
type riskState struct {
	mu         sync.Mutex
	unlicensed bool
	// clearedOnReset: "Allow on-premises password change to reset user
	// risk" (riskpolicy.go)
	clearedOnReset bool
	users          map[string]*RiskyUser // by user ID
	detections     []*RiskDetection      // in detection order
}

var riskLevelRank = map[string]int{RiskLevelNone: 0, RiskLevelLow: 1, RiskLevelMedium: 2, RiskLevelHigh: 3}

// SetRiskLicensed switches the tenant's Entra ID P2 licence: without it
// every Identity Protection call answers 403.
func (s *Server) SetRiskLicensed(licensed bool) {
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	s.risk.unlicensed = !licensed
}

// RaiseRisk is the admin hook standing in for Identity Protection's
// detection: a detection of eventType (e.g. "leakedCredentials") at level
// for the user (ID or UPN), which puts the user at risk (the higher of its
// level and the detection's). Offline detections such as leaked
// credentials carry no sign-in.
func (s *Server) RaiseRisk(idOrUPN, eventType, level string) (RiskDetection, error) {
	if _, ok := riskLevelRank[level]; !ok || level == RiskLevelNone {
		return RiskDetection{}, fmt.Errorf("graphsim: risk level %q: want low, medium or high", level)
	}
	s.mu.Lock()
	u := s.store.lookup(idOrUPN)
	var id, upn, name string
	if u != nil {
		id, upn, name = u.ID, u.UserPrincipalName, u.DisplayName
	}
	s.mu.Unlock()
	if u == nil {
		return RiskDetection{}, fmt.Errorf("graphsim: no user %s", idOrUPN)
	}
	now := time.Now().UTC()
	d := &RiskDetection{ID: newGUID(), RequestID: newGUID(), CorrelationID: newGUID(), RiskEventType: eventType,
		RiskState: RiskStateAtRisk, RiskLevel: level, RiskDetail: RiskDetailNone, Source: "IdentityProtection",
		DetectionTimingType: "offline", Activity: "user", TokenIssuerType: "AzureAD", ActivityDateTime: now,
		DetectedDateTime: now, LastUpdatedDateTime: now, UserID: id, UserDisplayName: name, UserPrincipalName: upn,
		AdditionalInfo: "[]"}
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	if s.risk.users == nil {
		s.risk.users = map[string]*RiskyUser{}
	}
	s.risk.detections = append(s.risk.detections, d)
	ru := s.risk.users[id]
	if ru == nil {
		ru = &RiskyUser{ID: id, RiskLevel: RiskLevelNone}
		s.risk.users[id] = ru
	}
	if ru.RiskState != RiskStateAtRisk || riskLevelRank[level] > riskLevelRank[ru.RiskLevel] {
		ru.RiskLevel = level
	}
	ru.RiskState, ru.RiskDetail, ru.RiskLastUpdatedDateTime = RiskStateAtRisk, RiskDetailNone, now
	ru.UserDisplayName, ru.UserPrincipalName = name, upn
	return *d, nil
}

// RemediateRisk stands in for the tenant's own remediation, e.g. detail
// RiskDetailUserChangedPasswordOnPremises when the tenant lets an
// on-premises password change reset user risk.
func (s *Server) RemediateRisk(userID, detail string) bool {
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	return s.risk.setUserRisk(userID, RiskLevelNone, RiskStateRemediated, detail, time.Now().UTC())
}

// RiskyUser returns the risky user record of a user ID.
func (s *Server) RiskyUser(userID string) (RiskyUser, bool) {
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	ru, ok := s.risk.users[userID]
	if !ok {
		return RiskyUser{}, false
	}
	return *ru, true
}

// setUserRisk changes a risky user and its open detections; r.mu held.
func (r *riskState) setUserRisk(userID, level, state, detail string, now time.Time) bool {
	ru, ok := r.users[userID]
	if !ok {
		return false
	}
	ru.RiskLevel, ru.RiskState, ru.RiskDetail, ru.RiskLastUpdatedDateTime = level, state, detail, now
	for _, d := range r.detections {
		if d.UserID == userID && d.RiskState == RiskStateAtRisk {
			d.RiskState, d.RiskDetail, d.LastUpdatedDateTime = state, detail, now
		}
	}
	return true
}

// riskGate answers 403 for a tenant without Entra ID P2. The body is what
// Graph answers an unlicensed tenant's Identity Protection calls.
func (s *Server) riskGate() *reply {
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	if !s.risk.unlicensed {
		return nil
	}
	r := errorReply(http.StatusForbidden, codeAuthDenied,
		"Your tenant is not licensed for this feature. Using the Identity Protection APIs requires a Microsoft Entra ID P2 license.")
	return &r
}

// GET /identityProtection/riskyUsers: $filter on riskLastUpdatedDateTime
// (ge, gt, le, lt), riskLevel, riskState (eq); $top and @odata.nextLink.
func (s *Server) listRiskyUsers(c *call) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	match, err := riskFilter(c.query.Get("$filter"), riskyUserFields)
	if err != nil {
		return queryErrorReply(err)
	}
	s.risk.mu.Lock()
	var all []map[string]any
	for _, ru := range s.risk.users {
		obj := toMap(ru)
		if match(obj) {
			all = append(all, obj)
		}
	}
	s.risk.mu.Unlock()
	slices.SortFunc(all, func(a, b map[string]any) int {
		if c := strings.Compare(a["riskLastUpdatedDateTime"].(string), b["riskLastUpdatedDateTime"].(string)); c != 0 {
			return c
		}
		return strings.Compare(a["id"].(string), b["id"].(string))
	})
	return riskPage(c, "/identityProtection/riskyUsers", "riskyUsers", all)
}

// GET /identityProtection/riskyUsers/{id}.
func (s *Server) getRiskyUser(c *call) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	s.risk.mu.Lock()
	ru, ok := s.risk.users[c.vars[0]]
	var obj map[string]any
	if ok {
		obj = toMap(ru)
	}
	s.risk.mu.Unlock()
	if !ok {
		return notFound(c.vars[0])
	}
	obj["@odata.context"] = graphContext + "#identityProtection/riskyUsers/$entity"
	return jsonReply(http.StatusOK, obj)
}

// GET /identityProtection/riskDetections: $filter on detectedDateTime,
// lastUpdatedDateTime (ge, gt, le, lt), riskEventType, userId, riskState,
// riskLevel (eq).
func (s *Server) listRiskDetections(c *call) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	match, err := riskFilter(c.query.Get("$filter"), riskDetectionFields)
	if err != nil {
		return queryErrorReply(err)
	}
	s.risk.mu.Lock()
	var all []map[string]any
	for _, d := range s.risk.detections {
		obj := toMap(d)
		if match(obj) {
			all = append(all, obj)
		}
	}
	s.risk.mu.Unlock()
	return riskPage(c, "/identityProtection/riskDetections", "riskDetections", all)
}

// GET /identityProtection/riskDetections/{id}.
func (s *Server) getRiskDetection(c *call) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	s.risk.mu.Lock()
	var obj map[string]any
	for _, d := range s.risk.detections {
		if strings.EqualFold(d.ID, c.vars[0]) {
			obj = toMap(d)
		}
	}
	s.risk.mu.Unlock()
	if obj == nil {
		return notFound(c.vars[0])
	}
	obj["@odata.context"] = graphContext + "#identityProtection/riskDetections/$entity"
	return jsonReply(http.StatusOK, obj)
}

// POST /identityProtection/riskyUsers/dismiss.
func (s *Server) dismissRiskyUsers(c *call) reply {
	return s.riskAction(c, RiskLevelNone, RiskStateDismissed, RiskDetailAdminDismissedAllRiskForUser)
}

// POST /identityProtection/riskyUsers/confirmCompromised.
func (s *Server) confirmCompromised(c *call) reply {
	return s.riskAction(c, RiskLevelHigh, RiskStateConfirmedCompromised, RiskDetailAdminConfirmedUserCompromised)
}

func (s *Server) riskAction(c *call, level, state, detail string) reply {
	if r := s.riskGate(); r != nil {
		return *r
	}
	var body struct {
		UserIDs []string `json:"userIds"`
	}
	if err := json.Unmarshal(c.body, &body); err != nil || len(body.UserIDs) == 0 {
		return badRequest("The request body must hold userIds, a non-empty array of user IDs.")
	}
	if len(body.UserIDs) > riskMaxIDs {
		return badRequest(fmt.Sprintf("At most %d userIds per request.", riskMaxIDs))
	}
	s.mu.Lock()
	var users []*User
	for _, id := range body.UserIDs {
		users = append(users, s.store.lookup(id))
	}
	s.mu.Unlock()
	now := time.Now().UTC()
	s.risk.mu.Lock()
	defer s.risk.mu.Unlock()
	if s.risk.users == nil {
		s.risk.users = map[string]*RiskyUser{}
	}
	for i, id := range body.UserIDs {
		if _, ok := s.risk.users[id]; !ok {
			u := users[i]
			if u == nil {
				continue // Graph ignores IDs it does not know
			}
			// confirmCompromised on a user without risk creates the record.
			s.risk.users[id] = &RiskyUser{ID: id, UserPrincipalName: u.UserPrincipalName, UserDisplayName: u.DisplayName}
		}
		s.risk.setUserRisk(id, level, state, detail, now)
	}
	return emptyReply(http.StatusNoContent)
}

var (
	riskyUserFields     = map[string]bool{"riskLastUpdatedDateTime": true, "riskLevel": false, "riskState": false, "riskDetail": false, "id": false, "userPrincipalName": false}
	riskDetectionFields = map[string]bool{"detectedDateTime": true, "lastUpdatedDateTime": true, "activityDateTime": true,
		"riskEventType": false, "riskLevel": false, "riskState": false, "userId": false, "id": false}
)

// riskFilter parses the subset of $filter the risk lists take: clauses
// joined by "and", each "prop op value"; fields maps the filterable
// properties to whether they are times (compared with ge/gt/le/lt against
// an unquoted ISO 8601 literal) or strings (eq against a quoted one).
func riskFilter(raw string, fields map[string]bool) (func(map[string]any) bool, error) {
	var preds []func(map[string]any) bool
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return func(map[string]any) bool { return true }, nil
	}
	for _, clause := range splitAnd(raw) {
		parts := strings.Fields(clause)
		if len(parts) != 3 {
			return nil, unsupported("'%s' is not a supported filter clause", clause)
		}
		var prop string
		isTime := false
		for f, t := range fields {
			if strings.EqualFold(f, parts[0]) {
				prop, isTime = f, t
			}
		}
		if prop == "" {
			return nil, &queryError{codeODataBadRequest, fmt.Sprintf("Could not find a property named '%s'.", parts[0])}
		}
		op, lit := strings.ToLower(parts[1]), parts[2]
		switch {
		case isTime:
			at, err := time.Parse(time.RFC3339Nano, lit)
			if err != nil || !slices.Contains([]string{"ge", "gt", "le", "lt", "eq"}, op) {
				return nil, unsupported("'%s': a time compares with ge, gt, le, lt or eq to an ISO 8601 value", clause)
			}
			preds = append(preds, func(o map[string]any) bool {
				v, _ := o[prop].(string)
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return false
				}
				switch op {
				case "ge":
					return !t.Before(at)
				case "gt":
					return t.After(at)
				case "le":
					return !t.After(at)
				case "lt":
					return t.Before(at)
				}
				return t.Equal(at)
			})
		case op == "eq" && len(lit) >= 2 && strings.HasPrefix(lit, "'") && strings.HasSuffix(lit, "'"):
			want := lit[1 : len(lit)-1]
			preds = append(preds, func(o map[string]any) bool {
				v, _ := o[prop].(string)
				return strings.EqualFold(v, want)
			})
		default:
			return nil, unsupported("'%s': %s compares with eq to a quoted string", clause, prop)
		}
	}
	return func(o map[string]any) bool {
		for _, p := range preds {
			if !p(o) {
				return false
			}
		}
		return true
	}, nil
}

// splitAnd splits a filter on " and " (case-insensitive); values never hold it.
func splitAnd(s string) []string {
	var out []string
	for {
		i := strings.Index(strings.ToLower(s), " and ")
		if i < 0 {
			return append(out, strings.TrimSpace(s))
		}
		out = append(out, strings.TrimSpace(s[:i]))
		s = s[i+len(" and "):]
	}
}

// riskPage answers one page of a risk list with @odata.nextLink.
func riskPage(c *call, path, context string, all []map[string]any) reply {
	top, skip, bad := pageOf(c)
	if bad != nil {
		return *bad
	}
	page := []map[string]any{}
	for i := skip; i < len(all) && i < skip+top; i++ {
		page = append(page, all[i])
	}
	out := map[string]any{"@odata.context": graphContext + "#" + context, "value": page}
	if skip+top < len(all) {
		q := cloneValues(c.query)
		q.Set("$skiptoken", encodeSkipToken(skip+top))
		out["@odata.nextLink"] = c.base + path + "?" + q.Encode()
	}
	return jsonReply(http.StatusOK, out)
}

// toMap renders a record with Graph's names and time format.
func toMap(v any) map[string]any {
	b, _ := json.Marshal(v) // plain structs of strings, bools and times
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for k, val := range m {
		if s, ok := val.(string); ok && strings.HasSuffix(k, "DateTime") {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				m[k] = t.UTC().Format("2006-01-02T15:04:05.0000000Z")
			}
		}
	}
	return m
}
