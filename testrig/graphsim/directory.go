package graphsim

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Tenant-wide password settings pwsync reads: domains (cloud password
// expiry per domain) and the directory synchronization features that
// decide how Entra Connect treats synced users' passwords.

// Domain is a tenant domain. Password fields are Graph's.
type Domain struct {
	ID                               string // the domain name
	AuthenticationType               string // "Managed" (default) or "Federated"
	IsDefault, IsInitial, IsVerified bool
	PasswordValidityPeriodInDays     int // 2147483647: never expires
	PasswordNotificationWindowInDays int
	// ValidityUnset, WindowUnset: the property was never set (Graph
	// returns null; the validity then counts as 90 days, the window as 14).
	// A PATCH of the property sets it.
	ValidityUnset, WindowUnset bool
}

// neverExpires is Graph's passwordValidityPeriodInDays for "never".
const neverExpires = 2147483647

// syncFeatureNames are the onPremisesDirectorySynchronizationFeature flags.
var syncFeatureNames = []string{
	"blockCloudObjectTakeoverThroughHardMatchEnabled", "blockSoftMatchEnabled", "bypassDirSyncOverridesEnabled",
	"cloudPasswordPolicyForPasswordSyncedUsersEnabled", "concurrentCredentialUpdateEnabled",
	"concurrentOrgIdProvisioningEnabled", "deviceWritebackEnabled", "directoryExtensionsEnabled",
	"fopeConflictResolutionEnabled", "groupWriteBackEnabled", "passwordSyncEnabled", "passwordWritebackEnabled",
	"quarantineUponProxyAddressesConflictEnabled", "quarantineUponUpnConflictEnabled", "softMatchOnUpnEnabled",
	"synchronizeUpnForManagedUsersEnabled", "unifiedGroupWritebackEnabled", "userForcePasswordChangeOnLogonEnabled",
	"userWritebackEnabled",
}

var (
	rolesDomainRead  = []string{"Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	rolesDomainWrite = []string{"Domain.ReadWrite.All", "Directory.ReadWrite.All"}
	rolesSyncRead    = []string{"OnPremDirectorySynchronization.Read.All", "OnPremDirectorySynchronization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	rolesSyncWrite   = []string{"OnPremDirectorySynchronization.ReadWrite.All", "Directory.ReadWrite.All"}
)

// defaultDirectory gives a new Server its initial domain and the sync
// features of a tenant with password hash sync on.
func defaultDirectory() (map[string]*Domain, map[string]bool) {
	d := &Domain{ID: "graphsim.onmicrosoft.com", AuthenticationType: "Managed", IsDefault: true, IsInitial: true,
		IsVerified: true, PasswordValidityPeriodInDays: neverExpires, PasswordNotificationWindowInDays: 14}
	features := map[string]bool{}
	for _, f := range syncFeatureNames {
		features[f] = false
	}
	features["passwordSyncEnabled"] = true
	return map[string]*Domain{d.ID: d}, features
}

// PutDomain creates or replaces a domain (ID is its name).
func (s *Server) PutDomain(d Domain) {
	if d.AuthenticationType == "" {
		d.AuthenticationType = "Managed"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.domains[strings.ToLower(d.ID)] = &d
}

// Domain returns a domain by name.
func (s *Server) Domain(id string) (Domain, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[strings.ToLower(id)]
	if !ok {
		return Domain{}, false
	}
	return *d, true
}

// SetSyncFeature sets one onPremisesSynchronization feature flag, e.g.
// "cloudPasswordPolicyForPasswordSyncedUsersEnabled".
func (s *Server) SetSyncFeature(name string, on bool) error {
	if !slices.Contains(syncFeatureNames, name) {
		return fmt.Errorf("graphsim: unknown sync feature %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncFeatures[name] = on
	return nil
}

// SyncFeatures returns the onPremisesSynchronization feature flags.
func (s *Server) SyncFeatures() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.syncFeatures)
}

func (d *Domain) json() map[string]any {
	orNull := func(v int, unset bool) any {
		if unset {
			return nil
		}
		return v
	}
	return map[string]any{
		"id":                               d.ID,
		"authenticationType":               d.AuthenticationType,
		"isAdminManaged":                   true,
		"isDefault":                        d.IsDefault,
		"isInitial":                        d.IsInitial,
		"isRoot":                           true,
		"isVerified":                       d.IsVerified,
		"passwordValidityPeriodInDays":     orNull(d.PasswordValidityPeriodInDays, d.ValidityUnset),
		"passwordNotificationWindowInDays": orNull(d.PasswordNotificationWindowInDays, d.WindowUnset),
		"supportedServices":                []string{"Email", "OfficeCommunicationsOnline"},
	}
}

// GET /domains
func (s *Server) listDomains(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	value := []map[string]any{}
	for _, id := range slices.Sorted(maps.Keys(s.domains)) {
		value = append(value, s.domains[id].json())
	}
	return jsonReply(http.StatusOK, map[string]any{"@odata.context": graphContext + "#domains", "value": value})
}

// GET /domains/{id}
func (s *Server) getDomain(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[strings.ToLower(c.vars[0])]
	if !ok {
		return notFound(c.vars[0])
	}
	body := d.json()
	body["@odata.context"] = graphContext + "#domains/$entity"
	return jsonReply(http.StatusOK, body)
}

// PATCH /domains/{id}: the password expiry settings. Verified, managed
// domains only, as Update-MgDomain.
func (s *Server) patchDomain(c *call) reply {
	var req struct {
		Validity *int `json:"passwordValidityPeriodInDays"`
		Window   *int `json:"passwordNotificationWindowInDays"`
	}
	if err := decodeStrict(c.body, &req); err != nil {
		return badRequest(fmt.Sprintf("Only passwordValidityPeriodInDays and passwordNotificationWindowInDays can be updated: %v.", err))
	}
	if req.Validity != nil && (*req.Validity < 14 || *req.Validity > 730) && *req.Validity != neverExpires {
		return badRequest("Invalid value specified for property 'passwordValidityPeriodInDays' of resource 'Domain': between 14 and 730 days, or 2147483647.")
	}
	if req.Window != nil && (*req.Window < 1 || *req.Window > 30) {
		return badRequest("Invalid value specified for property 'passwordNotificationWindowInDays' of resource 'Domain': between 1 and 30 days.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[strings.ToLower(c.vars[0])]
	switch {
	case !ok:
		return notFound(c.vars[0])
	case !d.IsVerified:
		return badRequest("Unable to update the password policy of an unverified domain.")
	case strings.EqualFold(d.AuthenticationType, "Federated"):
		return badRequest("Unable to update the password policy of a federated domain: passwords are managed by the federation service.")
	}
	if req.Validity != nil {
		d.PasswordValidityPeriodInDays, d.ValidityUnset = *req.Validity, false
	}
	if req.Window != nil {
		d.PasswordNotificationWindowInDays, d.WindowUnset = *req.Window, false
	}
	return emptyReply(http.StatusNoContent)
}

func (s *Server) syncObject() map[string]any {
	return map[string]any{
		"id": s.opts.TenantID,
		"configuration": map[string]any{
			"synchronizationInterval":                  "PT30M",
			"customerRequestedSynchronizationInterval": nil,
			"accidentalDeletionPrevention":             map[string]any{"synchronizationPreventionType": "enabledForCount", "alertThreshold": 500},
		},
		"features": maps.Clone(s.syncFeatures),
	}
}

// GET /directory/onPremisesSynchronization
func (s *Server) listSync(c *call) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return jsonReply(http.StatusOK, map[string]any{
		"@odata.context": graphContext + "#directory/onPremisesSynchronization",
		"value":          []any{s.syncObject()},
	})
}

// GET /directory/onPremisesSynchronization/{id}
func (s *Server) getSync(c *call) reply {
	if !s.knownTenant(c.vars[0]) {
		return notFound(c.vars[0])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	body := s.syncObject()
	body["@odata.context"] = graphContext + "#directory/onPremisesSynchronization/$entity"
	return jsonReply(http.StatusOK, body)
}

// PATCH /directory/onPremisesSynchronization/{id} {"features": {...}}
func (s *Server) patchSync(c *call) reply {
	if !s.knownTenant(c.vars[0]) {
		return notFound(c.vars[0])
	}
	var req struct {
		Features map[string]json.RawMessage `json:"features"`
	}
	if err := decodeStrict(c.body, &req); err != nil || req.Features == nil {
		return badRequest("The body must be {\"features\": {...}}.")
	}
	set := map[string]bool{}
	for k, raw := range req.Features {
		var v bool
		if !slices.Contains(syncFeatureNames, k) || json.Unmarshal(raw, &v) != nil {
			return badRequest(fmt.Sprintf("Invalid value specified for property 'features.%s'.", k))
		}
		set[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(s.syncFeatures, set)
	return emptyReply(http.StatusNoContent)
}
