package adwatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
)

// Password policy watch. A user's expiry changes without any change to the
// user when the domain's maxPwdAge changes, when a PSO changes, or when the
// user joins or leaves a group a PSO applies to; DirSync's user stream shows
// none of these. So the watcher reads the policy (domain head, Password
// Settings Container, the groups PSOs and scope apply to) on every periodic
// poll, and when it differs from the last one re-reads exactly the users it
// affects: everyone for maxPwdAge, the members (nested) of the groups
// concerned for a PSO or a membership change. Re-read users carry a new
// PolicyRev, which makes their event IDs new (same uSNChanged, new state).

// inChain is LDAP_MATCHING_RULE_IN_CHAIN: transitive membership (Samba supports it).
const inChain = "1.2.840.113556.1.4.1941"

// pso is one fine-grained password policy.
type pso struct {
	DN         string        `json:"dn"`
	Name       string        `json:"name"`
	Precedence int64         `json:"precedence"`
	MaxAge     time.Duration `json:"max_age"` // 0 = never expires
	AppliesTo  []string      `json:"applies_to"`
	// GUID is the binary objectGUID, the tie-break between equal
	// precedences. Left out of the fingerprint: it is fixed for the PSO's
	// life, and adding it would have made every existing deployment re-read
	// all its users once for nothing.
	GUID []byte `json:"-"`
}

// Kinds of the objects a PSO applies to (policy.Targets).
const (
	targetUser          = "user"
	targetGlobalSecGrp  = "global_security_group" // groupType has 0x80000000 (security) and 0x2 (global)
	targetOther         = "other"                 // universal, domain-local or distribution group, or another object: no PSO through it
	targetMissing       = "missing"
	groupTypeSecurity   = 0x80000000
	groupTypeGlobalFlag = 0x2
)

// policy is what decides expiries, plus the groups whose membership matters.
type policy struct {
	DomainMaxAge time.Duration `json:"domain_max_age"` // 0 = never expires
	PSOs         []pso         `json:"psos"`
	// Groups: tracked group DN -> signature of it and its nested groups
	// (their uSNChanged, which moves with every membership change).
	Groups map[string]string `json:"groups"`
	// Targets: tracked DN (lower case) -> its kind (target* above). Not in
	// the fingerprint: a group's type change moves its uSNChanged, which
	// its signature in Groups already holds.
	Targets map[string]string `json:"-"`
	// PrimaryRIDs: RID -> DN (lower case) of the tracked global security
	// groups, for users whose primary group (primaryGroupID, never in
	// memberOf) is one of them. Not in the fingerprint, as Targets.
	PrimaryRIDs map[uint32]string `json:"-"`
}

// fingerprint identifies a policy state.
func (p policy) fingerprint() string {
	raw, _ := json.Marshal(p) // maps marshal sorted
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:12])
}

// policyCursor is what is saved per domain.
type policyCursor struct {
	Fingerprint string `json:"fingerprint"`
	Rev         int64  `json:"rev"`
}

// maxAge converts AD's maxPwdAge / msDS-MaximumPasswordAge (negative
// 100 ns ticks; 0 or the minimum int64 = never). Like Samba, anything
// under a day means never.
func maxAge(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, err
	}
	if n == -1<<63 || n == 0 {
		return 0, nil
	}
	if n < 0 {
		n = -n
	}
	d := time.Duration(n) * 100
	if d < 24*time.Hour {
		return 0, nil
	}
	return d, nil
}

// readPolicy reads the domain head, the PSOs, and the signatures of the
// tracked groups (configured ones and those PSOs apply to).
func (w *Watcher) readPolicy(c *ldap.Conn) (policy, error) {
	var p policy
	res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"maxPwdAge"}, nil))
	if err != nil || len(res.Entries) != 1 {
		return p, fmt.Errorf("reading maxPwdAge of %s: %w", w.cfg.BaseDN, err)
	}
	if p.DomainMaxAge, err = maxAge(res.Entries[0].GetAttributeValue("maxPwdAge")); err != nil {
		return p, fmt.Errorf("maxPwdAge of %s: %w", w.cfg.BaseDN, err)
	}
	psc := "CN=Password Settings Container,CN=System," + w.cfg.BaseDN
	res, err = c.Search(ldap.NewSearchRequest(psc, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=msDS-PasswordSettings)", []string{"cn", "objectGUID", "msDS-PasswordSettingsPrecedence", "msDS-MaximumPasswordAge", "msDS-PSOAppliesTo"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return p, fmt.Errorf("reading PSOs in %s: %w", psc, err)
	}
	groups := slices.Clone(w.cfg.Groups)
	if res != nil {
		for _, e := range res.Entries {
			age, err := maxAge(e.GetAttributeValue("msDS-MaximumPasswordAge"))
			if err != nil {
				return p, fmt.Errorf("PSO %s: msDS-MaximumPasswordAge: %w", e.DN, err)
			}
			prec, _ := strconv.ParseInt(e.GetAttributeValue("msDS-PasswordSettingsPrecedence"), 10, 64)
			applies := e.GetAttributeValues("msDS-PSOAppliesTo")
			slices.SortFunc(applies, compareFold)
			p.PSOs = append(p.PSOs, pso{DN: e.DN, Name: e.GetAttributeValue("cn"), Precedence: prec, MaxAge: age, AppliesTo: applies,
				GUID: e.GetRawAttributeValue("objectGUID")})
			groups = append(groups, applies...)
		}
	}
	slices.SortFunc(p.PSOs, func(a, b pso) int { return compareFold(a.DN, b.DN) })
	p.Groups, p.Targets, p.PrimaryRIDs = map[string]string{}, map[string]string{}, map[uint32]string{}
	for _, g := range groups {
		key := strings.ToLower(g)
		if _, done := p.Groups[key]; done {
			continue
		}
		sig, kind, rid, err := w.groupSignature(c, g)
		if err != nil {
			return p, err
		}
		p.Groups[key], p.Targets[key] = sig, kind
		if kind == targetGlobalSecGrp && rid != 0 {
			p.PrimaryRIDs[rid] = key
		}
	}
	return p, nil
}

// unreadablePSOs returns the PSOs the policy read (p) did not return but
// the domain shows exist: entries of the Password Settings Container, and
// PSOs named by the msDS-PSOApplied of users and groups. A bind account
// without read on the PSOs (AD's default for non-admins) may still see
// these (Samba lists the PSOs' DNs, and msDS-PSOApplied is readable); one
// that sees neither cannot be told from a domain without PSOs.
func (w *Watcher) unreadablePSOs(c *ldap.Conn, p policy) ([]string, error) {
	read := make(map[string]bool, len(p.PSOs))
	for _, x := range p.PSOs {
		read[strings.ToLower(x.DN)] = true
	}
	missing := map[string]bool{}
	psc := "CN=Password Settings Container,CN=System," + w.cfg.BaseDN
	res, err := c.Search(ldap.NewSearchRequest(psc, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil, fmt.Errorf("listing %s: %w", psc, err)
	}
	if res != nil {
		for _, e := range res.Entries {
			if !read[strings.ToLower(e.DN)] {
				missing[strings.ToLower(e.DN)] = true
			}
		}
	}
	res, err = c.SearchWithPaging(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(msDS-PSOApplied=*)", []string{"msDS-PSOApplied"}, nil), uint32(w.cfg.PageSize))
	if err != nil {
		return nil, fmt.Errorf("reading msDS-PSOApplied below %s: %w", w.cfg.BaseDN, err)
	}
	for _, e := range res.Entries {
		for _, dn := range e.GetAttributeValues("msDS-PSOApplied") {
			if !read[strings.ToLower(dn)] {
				missing[strings.ToLower(dn)] = true
			}
		}
	}
	return slices.Sorted(mapKeys(missing)), nil
}

// groupSignature is the uSNChanged of a group and of every group nested in
// it: any membership change anywhere below changes it. A DN that is not a
// group (a PSO may apply to a user) has its own uSNChanged. kind says what
// dn is (target*), for the PSO fallback, and rid its RID (the last
// sub-authority of its objectSid; 0 when unknown).
func (w *Watcher) groupSignature(c *ldap.Conn, dn string) (sig, kind string, rid uint32, err error) {
	filter := fmt.Sprintf("(|(distinguishedName=%s)(&(objectClass=group)(memberOf:%s:=%s)))", ldap.EscapeFilter(dn), inChain, ldap.EscapeFilter(dn))
	res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		filter, []string{"uSNChanged", "objectClass", "groupType", "objectSid"}, nil))
	if err != nil {
		return "", "", 0, fmt.Errorf("reading group %s: %w", dn, err)
	}
	parts := make([]string, 0, len(res.Entries))
	kind = targetMissing
	for _, e := range res.Entries {
		parts = append(parts, strings.ToLower(e.DN)+"="+e.GetAttributeValue("uSNChanged"))
		if sameDN(e.DN, dn) {
			kind, rid = targetKind(e), sidRID(e.GetRawAttributeValue("objectSid"))
		}
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "missing", targetMissing, 0, nil
	}
	return strings.Join(parts, ";"), kind, rid, nil
}

// sidRID is the last sub-authority of a binary SID (revision, count,
// 6-byte authority, count little-endian 32-bit sub-authorities); 0 when
// the SID is malformed.
func sidRID(sid []byte) uint32 {
	if len(sid) < 12 || len(sid) != 8+4*int(sid[1]) {
		return 0
	}
	return binary.LittleEndian.Uint32(sid[len(sid)-4:])
}

// targetKind classifies an object a PSO applies to. Only global security
// groups pass a PSO on to their members: MS-ADTS 3.1.1.4.5.36 takes the
// user's groups from IDL_DRSGetMemberships with RevMembGetAccountGroups
// (MS-DRSR 4.1.8.1.3: transitive membership in the account, i.e. global,
// groups), and Microsoft's FGPP documentation says PSOs apply to users and
// global security groups. (Samba 4.17 passes them on through universal and
// domain-local groups too; TestPSOFallbackAgreesWithDC logs it.)
func targetKind(e *ldap.Entry) string {
	classes := e.GetAttributeValues("objectClass")
	isGroup := slices.ContainsFunc(classes, func(c string) bool { return strings.EqualFold(c, "group") })
	if !isGroup {
		if slices.ContainsFunc(classes, func(c string) bool { return strings.EqualFold(c, "user") }) {
			return targetUser
		}
		return targetOther
	}
	gt, err := strconv.ParseInt(e.GetAttributeValue("groupType"), 10, 64)
	if err != nil {
		return targetOther
	}
	if t := uint32(gt); t&groupTypeSecurity != 0 && t&groupTypeGlobalFlag != 0 {
		return targetGlobalSecGrp
	}
	return targetOther
}

// sameDN compares two DNs as AD does (case and spacing aside).
func sameDN(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	pa, err1 := ldap.ParseDN(a)
	pb, err2 := ldap.ParseDN(b)
	return err1 == nil && err2 == nil && pa.EqualFold(pb)
}

// members returns the DNs of the users below BaseDN that are members of
// group, nested membership included (or the DN itself if it is a user).
func (w *Watcher) members(c *ldap.Conn, group string) (map[string]bool, error) {
	filter := fmt.Sprintf("(&%s(|(distinguishedName=%s)(memberOf:%s:=%s)))", w.cfg.UserFilter, ldap.EscapeFilter(group), inChain, ldap.EscapeFilter(group))
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		filter, []string{"objectGUID"}, nil), uint32(w.cfg.PageSize))
	if err != nil {
		return nil, fmt.Errorf("reading members of %s: %w", group, err)
	}
	out := make(map[string]bool, len(res.Entries))
	for _, e := range res.Entries {
		out[strings.ToLower(e.DN)] = true
	}
	return out, nil
}

func compareFold(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) }

// ReadPolicy connects to the domain and returns its password policy (the
// domain's maxPwdAge and the PSOs), for `pwsync policy report`.
func ReadPolicy(ctx context.Context, cfg Config) (events.ADPolicy, error) {
	w, err := New(cfg, nopSink{}, nopCursors{}, zerolog.Nop())
	if err != nil {
		return events.ADPolicy{}, err
	}
	c, err := w.dial()
	if err != nil {
		return events.ADPolicy{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	p, err := w.readPolicy(c)
	if err != nil {
		return events.ADPolicy{}, err
	}
	ap := events.ADPolicy{Domain: cfg.Domain, DomainMaxAge: p.DomainMaxAge}
	for _, x := range p.PSOs {
		ap.PSOs = append(ap.PSOs, events.PSO{DN: x.DN, Name: x.Name, Precedence: x.Precedence, MaxAge: x.MaxAge, AppliesTo: x.AppliesTo})
	}
	return ap, nil
}

type nopSink struct{}

func (nopSink) Publish(context.Context, []events.ADUser) error { return nil }

type nopCursors struct{}

func (nopCursors) Load(context.Context, string) ([]byte, error) { return nil, nil }
func (nopCursors) Save(context.Context, string, []byte) error   { return nil }
