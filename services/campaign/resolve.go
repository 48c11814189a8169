package campaign

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

// ADUser is a user as an AD search returns it.
type ADUser struct {
	DN       string
	GUID     string // canonical lower case
	UPN      string // lower case
	Name     string
	Disabled bool
	// PwdLastSet as read when the campaign was planned (FILETIME; 0 =
	// must change already, or not read): a read-back after an unanswered
	// write that finds it unchanged knows the write did not take.
	PwdLastSet int64
}

// ADDirectory searches one AD domain (below base, with a complete filter).
type ADDirectory interface {
	Search(ctx context.Context, base, filter string) ([]ADUser, error)
	// GroupMembers are the users (matching userFilter) of a group, nested
	// membership included, found by following its member links: a few reads
	// for a small group whatever the domain's size (break-glass groups are
	// read again while a campaign runs).
	GroupMembers(ctx context.Context, groupDN, userFilter string) ([]ADUser, error)
}

// Scope is what limits every campaign: the domain, evaluator.scope and the
// break-glass accounts, which no selector can reach.
type Scope struct {
	Domain           string
	BaseDN           string
	UserFilter       string
	IncludeOUs       []string
	BreakGlassUPNs   []string
	BreakGlassGroups []string
	IncludeDisabled  bool
}

// Resolver turns selectors into targets.
type Resolver struct {
	AD    ADDirectory // nil: no AD domain configured (cloud-only tenant)
	Cloud graph.Directory
	Batch graph.Batcher
	Scope Scope
}

// Excluded is a matched user the campaign leaves alone, and why.
type Excluded struct {
	UPN    string `json:"upn"`
	Kind   Kind   `json:"kind,omitempty"`
	Reason string `json:"reason"`
}

// Exclusion reasons.
const (
	ReasonBreakGlassUPN   = "break-glass account (evaluator.scope.break_glass_upns)"
	ReasonBreakGlassGroup = "break-glass group member (evaluator.scope.break_glass_groups)"
	ReasonExcluded        = "excluded by the campaign's exclude selector"
	ReasonDisabled        = "account disabled"
	ReasonOutOfScope      = "outside evaluator.scope.include_ous"
	ReasonNoADAccount     = "synced cloud account whose AD object is not in this domain"
)

// Resolution is what a spec selects.
type Resolution struct {
	Targets   []Target
	Excluded  []Excluded
	Unmatched []string // UPNs of the list that matched nobody
}

type candidate struct {
	t       Target
	sources map[string]bool
}

// Resolve runs the selectors: the include union, minus the exclude union,
// minus break-glass, disabled and out-of-scope accounts. Targets come sorted
// (synced first, then by UPN) and numbered.
func (r *Resolver) Resolve(ctx context.Context, spec Spec) (Resolution, error) {
	inc, unmatched, err := r.collect(ctx, spec.Include)
	if err != nil {
		return Resolution{}, fmt.Errorf("resolving include: %w", err)
	}
	var exc map[string]*candidate
	if !spec.Exclude.Empty() {
		exc, _, err = r.collect(ctx, spec.Exclude)
		if err != nil {
			return Resolution{}, fmt.Errorf("resolving exclude: %w", err)
		}
	}
	bg, err := r.BreakGlass(ctx)
	if err != nil {
		return Resolution{}, err
	}

	var res Resolution
	res.Unmatched = unmatched
	for key, c := range inc {
		reason := bg.Reason(c.t) // always first: never written, whatever else says
		switch {
		case reason != "":
		case exc[key] != nil:
			reason = ReasonExcluded
		case c.sources["disabled"] && !r.Scope.IncludeDisabled:
			reason = ReasonDisabled
		case c.t.Kind == KindSynced && !r.inScope(c.t.DN):
			reason = ReasonOutOfScope
		case c.sources["no_ad"]:
			reason = ReasonNoADAccount
		}
		if reason != "" {
			res.Excluded = append(res.Excluded, Excluded{UPN: c.t.UPN, Kind: c.t.Kind, Reason: reason})
			continue
		}
		res.Targets = append(res.Targets, c.t)
	}
	slices.SortFunc(res.Targets, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind)*-1, cmp.Compare(a.UPN, b.UPN), cmp.Compare(a.Key(), b.Key()))
	})
	for i := range res.Targets {
		res.Targets[i].Idx = i
	}
	slices.SortFunc(res.Excluded, func(a, b Excluded) int { return cmp.Or(cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.UPN, b.UPN)) })
	slices.Sort(res.Unmatched)
	return res, nil
}

func (r *Resolver) inScope(dn string) bool {
	if len(r.Scope.IncludeOUs) == 0 {
		return true
	}
	d, err := ldap.ParseDN(dn)
	if err != nil {
		return false
	}
	for _, ou := range r.Scope.IncludeOUs {
		if o, err := ldap.ParseDN(ou); err == nil && o.AncestorOfFold(d) {
			return true
		}
	}
	return false
}

// BreakGlass is who no campaign writes: evaluator.scope's break-glass UPNs
// and the members of its break-glass groups, as they were when read.
type BreakGlass struct {
	UPNs  map[string]bool // lower case
	GUIDs map[string]bool // objectGUIDs of the groups' members, nested membership included
}

// Reason says why t is a break-glass account, or "" when it is not.
func (b *BreakGlass) Reason(t Target) string {
	switch {
	case b == nil:
		return ""
	case b.UPNs[t.UPN]:
		return ReasonBreakGlassUPN
	case t.Kind == KindSynced && b.GUIDs[t.ObjectGUID]:
		return ReasonBreakGlassGroup
	}
	return ""
}

// BreakGlass reads the break-glass accounts now: the groups' members with
// nested membership (stricter than the evaluator's direct memberOf). The
// preview, the start and the runner each read it, so that an account made
// break-glass after the preview is still never written.
func (r *Resolver) BreakGlass(ctx context.Context) (*BreakGlass, error) {
	b := &BreakGlass{UPNs: map[string]bool{}, GUIDs: map[string]bool{}}
	for _, u := range r.Scope.BreakGlassUPNs {
		b.UPNs[strings.ToLower(strings.TrimSpace(u))] = true
	}
	if r.AD == nil {
		return b, nil
	}
	for _, g := range r.Scope.BreakGlassGroups {
		users, err := r.AD.GroupMembers(ctx, g, r.Scope.UserFilter)
		if err != nil {
			return nil, fmt.Errorf("reading break-glass group %s: %w", g, err)
		}
		for _, u := range users {
			b.GUIDs[u.GUID] = true
		}
	}
	return b, nil
}

// collect resolves one selector to candidates by key; UPNs of its list that
// matched nobody come back apart.
func (r *Resolver) collect(ctx context.Context, s Selector) (map[string]*candidate, []string, error) {
	out := map[string]*candidate{}
	add := func(t Target, source string, disabled bool) *candidate {
		c := out[t.Key()]
		if c == nil {
			c = &candidate{t: t, sources: map[string]bool{}}
			out[t.Key()] = c
		}
		if c.t.CloudID == "" {
			c.t.CloudID = t.CloudID
		}
		c.sources[source] = true
		if disabled {
			c.sources["disabled"] = true
		}
		return c
	}
	addAD := func(u ADUser, source, cloudID string) {
		add(Target{Kind: KindSynced, UPN: u.UPN, DN: u.DN, ObjectGUID: u.GUID, CloudID: cloudID, Name: u.Name, PwdLastSet: u.PwdLastSet}, source, u.Disabled)
	}

	foundUPN := map[string]bool{}
	if r.AD != nil {
		for _, q := range s.adQueries(r.Scope.BaseDN, r.Scope.UserFilter, r.Scope.IncludeOUs) {
			users, err := r.AD.Search(ctx, q.Base, q.Filter)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", q.Source, err)
			}
			for _, u := range users {
				addAD(u, q.Source, "")
				foundUPN[u.UPN] = true
			}
		}
	} else if len(s.ADGroups)+len(s.OUs) > 0 || s.LDAPFilter != "" {
		return nil, nil, fmt.Errorf("%w: AD selectors need an AD domain (ad.domains)", ErrInvalid)
	}

	var cloud []graph.User
	var cloudSource []string
	for _, g := range s.EntraGroups {
		users, err := r.Cloud.TransitiveGroupMembers(ctx, g)
		if err != nil {
			return nil, nil, fmt.Errorf("entra group %s: %w", g, err)
		}
		for _, u := range users {
			cloud, cloudSource = append(cloud, u), append(cloudSource, "entra_group:"+g)
		}
	}
	if s.AllInScope {
		users, err := r.Cloud.ListUsers(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("listing cloud users: %w", err)
		}
		for _, u := range users {
			if !u.SyncEnabled { // synced ones came from AD above, with the AD scope
				cloud, cloudSource = append(cloud, u), append(cloudSource, "all_in_scope")
			}
		}
	}
	var missing []string
	for _, u := range s.UPNs {
		if !foundUPN[u] {
			missing = append(missing, u)
		}
	}
	found, unmatched, err := r.usersByUPN(ctx, missing)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range found {
		cloud, cloudSource = append(cloud, u), append(cloudSource, "upn_list")
	}

	// Synced cloud users are written in AD: find their AD objects by anchor.
	var synced []graph.User
	var syncedSource []string
	for i, u := range cloud {
		if u.SyncEnabled {
			synced, syncedSource = append(synced, u), append(syncedSource, cloudSource[i])
			continue
		}
		add(Target{Kind: KindCloud, UPN: strings.ToLower(u.UPN), CloudID: u.ID, Name: u.DisplayName, Lang: u.PreferredLanguage},
			cloudSource[i], !u.AccountEnabled)
	}
	if len(synced) > 0 {
		byGUID, err := r.adByAnchor(ctx, synced)
		if err != nil {
			return nil, nil, err
		}
		for i, u := range synced {
			if a, ok := byGUID[events.GUIDFromImmutableID(u.ImmutableID)]; ok {
				addAD(a, syncedSource[i], u.ID)
				continue
			}
			// Keyed as a cloud user so that it shows in the preview as excluded.
			add(Target{Kind: KindCloud, UPN: strings.ToLower(u.UPN), CloudID: u.ID, Name: u.DisplayName}, "no_ad", false)
		}
	}
	return out, unmatched, nil
}

// adByAnchor finds the AD objects of synced cloud users by objectGUID.
func (r *Resolver) adByAnchor(ctx context.Context, users []graph.User) (map[string]ADUser, error) {
	out := map[string]ADUser{}
	if r.AD == nil {
		return out, nil
	}
	var raws [][]byte
	for _, u := range users {
		if raw, err := events.ParseGUID(events.GUIDFromImmutableID(u.ImmutableID)); err == nil {
			raws = append(raws, raw)
		}
	}
	for i := 0; i < len(raws); i += upnChunk {
		found, err := r.AD.Search(ctx, r.Scope.BaseDN, andFilter(r.Scope.UserFilter, guidFilter(raws[i:min(i+upnChunk, len(raws))])))
		if err != nil {
			return nil, fmt.Errorf("finding synced users in AD: %w", err)
		}
		for _, a := range found {
			out[a.GUID] = a
		}
	}
	return out, nil
}

// usersByUPN reads cloud users by UPN, 20 per $batch (reads do not count
// against the write budget). 404s are the unmatched ones.
func (r *Resolver) usersByUPN(ctx context.Context, upns []string) ([]graph.User, []string, error) {
	var found []graph.User
	var unmatched []string
	for i := 0; i < len(upns); i += graph.MaxBatch {
		chunk := upns[i:min(i+graph.MaxBatch, len(upns))]
		reqs := make([]graph.BatchRequest, len(chunk))
		for j, u := range chunk {
			reqs[j] = graph.BatchRequest{ID: fmt.Sprint(j), Method: http.MethodGet,
				URL: "/users/" + url.PathEscape(u) + "?$select=" + graph.UserSelect}
		}
		resps, err := batchReads(ctx, r.Batch, reqs)
		if err != nil {
			return nil, nil, fmt.Errorf("reading cloud users by UPN: %w", err)
		}
		for j, resp := range resps {
			switch {
			case resp.Status == http.StatusNotFound:
				unmatched = append(unmatched, chunk[j])
			case resp.Err != nil:
				return nil, nil, fmt.Errorf("reading cloud user %s: %w", chunk[j], resp.Err)
			default:
				var uj graph.UserJSON
				if err := json.Unmarshal(resp.Body, &uj); err != nil {
					return nil, nil, fmt.Errorf("reading cloud user %s: %w", chunk[j], err)
				}
				found = append(found, uj.User())
			}
		}
	}
	return found, unmatched, nil
}
