package graphsim

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Identity platform endpoints, as MSAL (microsoft-authentication-library-
// for-go, used by azidentity) calls them with instance discovery disabled:
//
//	GET  /{tenant}/v2.0/.well-known/openid-configuration  (tenant discovery)
//	POST /{tenant}/oauth2/v2.0/token                      (client credentials)
//
// MSAL only calls /common/discovery/instance on login.microsoftonline.com
// (never on a private authority host), but it is served for clients that
// ask anyway.

const (
	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// assertionSkew is the clock skew tolerated on an assertion's nbf.
	assertionSkew = 5 * time.Minute
)

// serveIdentity answers the login endpoints; false when path is not one.
func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 3 && parts[0] == "common" && parts[1] == "discovery" && parts[2] == "instance":
		s.serveInstanceDiscovery(w, r)
	case len(parts) == 4 && parts[1] == "v2.0" && parts[2] == ".well-known" && parts[3] == "openid-configuration":
		s.serveOpenIDConfig(w, r, parts[0])
	case len(parts) == 4 && (parts[1] == "discovery" && parts[2] == "v2.0" && parts[3] == "keys"):
		// Access tokens are HMAC-signed: there is no public key to publish.
		writeJSON(w, http.StatusOK, map[string]any{"keys": []any{}})
	case len(parts) == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token":
		s.serveToken(w, r, parts[0])
	case len(parts) == 4 && parts[0] == "dataCollectionRules" && parts[2] == "streams":
		s.serveLogsIngestion(w, r, parts[1], parts[3]) // logsingestion.go: same host, as a DCE would be
	default:
		return false
	}
	return true
}

func (s *Server) knownTenant(t string) bool { return strings.EqualFold(t, s.opts.TenantID) }

func (s *Server) serveOpenIDConfig(w http.ResponseWriter, r *http.Request, tenant string) {
	base := "https://" + r.Host // the host the client used, so MSAL's issuer check passes
	issuerTenant := s.opts.TenantID
	switch {
	case s.knownTenant(tenant):
	case tenant == "common" || tenant == "organizations":
		issuerTenant = "{tenantid}" // as Entra ID answers for multi-tenant authorities
	default:
		s.aadError(w, http.StatusBadRequest, "invalid_tenant", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/" + tenant + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/" + tenant + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/" + issuerTenant + "/v2.0",
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                base + "/" + tenant + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/" + tenant + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/" + tenant + "/oauth2/v2.0/logout",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
	})
}

func (s *Server) serveInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	tenant := s.opts.TenantID
	if ae, err := url.Parse(r.URL.Query().Get("authorization_endpoint")); err == nil {
		if p := strings.Split(strings.Trim(ae.Path, "/"), "/"); p[0] != "" {
			tenant = p[0]
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + r.Host + "/" + tenant + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": r.Host,
			"preferred_cache":   r.Host,
			"aliases":           []string{r.Host},
		}},
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.Method != http.MethodPost {
		s.aadError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if !s.knownTenant(tenant) {
		if tenant == "common" || tenant == "organizations" {
			s.aadError(w, http.StatusBadRequest, "invalid_request", 50059,
				"No tenant-identifying information found in either the request or implied by any provided credentials.")
			return
		}
		s.aadError(w, http.StatusBadRequest, "invalid_request", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, fmt.Sprintf("The request body must be application/x-www-form-urlencoded: %v", err))
		return
	}
	f := r.PostForm
	if gt := f.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
			return
		}
		s.aadError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", gt))
		return
	}
	aud, errCode, code, msg := checkScope(f.Get("scope"))
	if errCode != "" {
		s.aadError(w, http.StatusBadRequest, errCode, code, msg)
		return
	}
	acr, status, errCode, code, msg := s.authenticateClient(r, tenant)
	if errCode != "" {
		s.aadError(w, status, errCode, code, msg)
		return
	}

	now := time.Now()
	claims := accessClaims{
		Aud:      aud,
		Iss:      "https://sts.windows.net/" + s.opts.TenantID + "/",
		Iat:      now.Unix(),
		Nbf:      now.Unix(),
		Exp:      now.Add(s.opts.TokenLifetime).Unix(),
		AppID:    s.opts.ClientID,
		AppIDACR: acr,
		IDType:   "app",
		Oid:      s.spID,
		Sub:      s.spID,
		Tid:      s.opts.TenantID,
		Roles:    slices.Clone(s.opts.Roles),
		Uti:      b64.EncodeToString(randomBytes(16)),
		Ver:      "1.0",
	}
	token, err := signHS256(s.tokenKey, claims)
	if err != nil {
		s.aadError(w, http.StatusInternalServerError, "server_error", 50000, err.Error())
		return
	}
	s.mu.Lock()
	s.stats.Tokens++
	s.mu.Unlock()
	secs := int(s.opts.TokenLifetime / time.Second)
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     secs,
		"ext_expires_in": secs,
		"access_token":   token,
	})
}

// checkScope accepts exactly one "/.default" scope of Graph or of Azure
// Monitor (the Logs Ingestion API, logsingestion.go) plus the OIDC scopes
// MSAL always adds (openid profile offline_access); aud is the token's.
func checkScope(scope string) (aud, errCode string, code int, msg string) {
	if strings.TrimSpace(scope) == "" {
		return "", "invalid_request", 900144, "The request body must contain the following parameter: 'scope'."
	}
	graph := 0
	aud = graphResource
	for _, sc := range strings.Fields(scope) {
		switch strings.ToLower(sc) {
		case "openid", "profile", "offline_access":
		case graphResource + "/.default", graphResource + "//.default", graphAppID + "/.default":
			graph++
		case monitorResource + "/.default", monitorResource + "//.default":
			graph++
			aud = monitorResource
		default:
			if !strings.HasSuffix(sc, "/.default") {
				return "", "invalid_scope", 1002012, fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", sc)
			}
			return "", "invalid_resource", 500011, fmt.Sprintf("The resource principal named %s was not found in the tenant. This simulator only serves Microsoft Graph.", strings.TrimSuffix(sc, "/.default"))
		}
	}
	if graph != 1 {
		return "", "invalid_scope", 70011, "The provided request must include exactly one 'https://graph.microsoft.com/.default' scope."
	}
	return aud, "", 0, ""
}

// authenticateClient checks the client credential: a client assertion, a
// secret in the form, or a secret in HTTP Basic. It returns the appidacr
// ("1" secret, "2" certificate) or an AAD error.
func (s *Server) authenticateClient(r *http.Request, tenant string) (acr string, status int, errCode string, code int, msg string) {
	f := r.PostForm
	clientID, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, secret = u, p
	}
	assertion := f.Get("client_assertion")
	if assertion != "" && clientID == "" {
		// client_id may be left out with an assertion: its iss names the app.
		if j, err := parseJWT(assertion); err == nil {
			var c struct{ Iss string }
			_ = json.Unmarshal(j.payload, &c)
			clientID = c.Iss
		}
	}
	if clientID == "" {
		return "", http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
	}
	if clientID != s.opts.ClientID {
		return "", http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", clientID, tenant)
	}
	switch {
	case assertion != "":
		if t := f.Get("client_assertion_type"); t != clientAssertionType {
			return "", http.StatusBadRequest, "invalid_request", 900144, fmt.Sprintf("The client_assertion_type '%s' is not supported; want '%s'.", t, clientAssertionType)
		}
		if code, msg := s.checkAssertion(r, tenant, assertion); code != 0 {
			return "", http.StatusUnauthorized, "invalid_client", code, msg
		}
		return "2", 0, "", 0, ""
	case secret != "":
		if s.opts.ClientSecret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
			return "", http.StatusUnauthorized, "invalid_client", 7000215,
				fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID)
		}
		return "1", 0, "", 0, ""
	}
	return "", http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
}

// checkAssertion verifies a certificate credential's client assertion:
// signature by a registered certificate, aud = this token endpoint,
// iss = sub = client ID, and the validity period.
func (s *Server) checkAssertion(r *http.Request, tenant, assertion string) (int, string) {
	j, err := parseJWT(assertion)
	if err != nil {
		return 50027, fmt.Sprintf("JWT token is invalid or malformed: %v.", err)
	}
	candidates, thumb := assertionCert(j, s.certs)
	if len(candidates) == 0 {
		return 700027, fmt.Sprintf("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '%s']", thumb)
	}
	if err := verifyRSA(j, candidates); err != nil {
		return 700027, fmt.Sprintf("Client assertion contains an invalid signature: %v.", err)
	}
	var c struct {
		Aud      any    `json:"aud"`
		Iss, Sub string `json:",omitempty"`
		Exp, Nbf *int64
	}
	if err := json.Unmarshal(j.payload, &c); err != nil {
		return 50027, fmt.Sprintf("JWT token is invalid or malformed: claims: %v.", err)
	}
	if c.Iss != s.opts.ClientID || c.Sub != s.opts.ClientID {
		return 700021, fmt.Sprintf("Client assertion application identifier doesn't match 'client_id' parameter (iss '%s', sub '%s').", c.Iss, c.Sub)
	}
	now := time.Now()
	if c.Exp == nil || now.After(time.Unix(*c.Exp, 0)) {
		return 700024, "Client assertion is not within its valid time range: it has expired or has no exp claim."
	}
	if c.Nbf != nil && now.Add(assertionSkew).Before(time.Unix(*c.Nbf, 0)) {
		return 700024, "Client assertion is not within its valid time range: nbf is in the future."
	}
	if !audienceMatches(c.Aud, "https://"+r.Host+"/"+tenant+"/oauth2/v2.0/token", s.url+"/"+tenant+"/oauth2/v2.0/token") {
		return 700212, fmt.Sprintf("The audience claim of the client assertion %v is not this token endpoint.", c.Aud)
	}
	return 0, ""
}

// audienceMatches accepts a string or list aud naming one of the endpoints.
func audienceMatches(aud any, endpoints ...string) bool {
	var auds []string
	switch v := aud.(type) {
	case string:
		auds = []string{v}
	case []any:
		for _, a := range v {
			if s, ok := a.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	for _, a := range auds {
		for _, e := range endpoints {
			if strings.EqualFold(strings.TrimSuffix(a, "/"), e) {
				return true
			}
		}
	}
	return false
}

// aadError writes an Entra ID (AADSTS) OAuth error.
func (s *Server) aadError(w http.ResponseWriter, status int, errCode string, code int, msg string) {
	trace, corr := newGUID(), newGUID()
	now := time.Now().UTC()
	writeJSON(w, status, map[string]any{
		"error": errCode,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			code, msg, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{code},
		"timestamp":      now.Format("2006-01-02 15:04:05Z"),
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      "https://login.microsoftonline.com/error?code=" + fmt.Sprint(code),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client may be gone; nothing to do about it
}

// bearerClaims validates the Authorization header of a Graph request.
func (s *Server) bearerClaims(h http.Header) (accessClaims, *reply) {
	deny := func(msg string) (accessClaims, *reply) {
		r := errorReply(http.StatusUnauthorized, codeInvalidToken, msg)
		r.setHeader("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="`+graphAppID+`"`)
		return accessClaims{}, &r
	}
	auth := h.Get("Authorization")
	scheme, token, _ := strings.Cut(auth, " ")
	if auth == "" || strings.TrimSpace(token) == "" {
		return deny("Access token is empty.")
	}
	if !strings.EqualFold(scheme, "Bearer") {
		return deny("Access token validation failure: the Authorization scheme must be Bearer.")
	}
	c, err := verifyHS256(s.tokenKey, strings.TrimSpace(token))
	if err != nil {
		return deny(fmt.Sprintf("IDX14100: JWT is not well formed or not issued by this tenant: %v.", err))
	}
	if c.Aud != graphResource && c.Aud != graphAppID {
		return deny("Access token validation failure. Invalid audience.")
	}
	if !strings.EqualFold(c.Tid, s.opts.TenantID) {
		return deny("Access token validation failure. Invalid issuer.")
	}
	if time.Now().After(time.Unix(c.Exp, 0)) {
		return deny("Lifetime validation failed, the token is expired.")
	}
	return c, nil
}
