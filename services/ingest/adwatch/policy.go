package adwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	p.Groups, p.Targets = map[string]string{}, map[string]string{}
	for _, g := range groups {
		key := strings.ToLower(g)
		if _, done := p.Groups[key]; done {
			continue
		}
		sig, kind, err := w.groupSignature(c, g)
		if err != nil {
			return p, err
		}
		p.Groups[key], p.Targets[key] = sig, kind
	}
	return p, nil
}

// groupSignature is the uSNChanged of a group and of every group nested in
// it: any membership change anywhere below changes it. A DN that is not a
// group (a PSO may apply to a user) has its own uSNChanged. kind says what
// dn is (target*), for the PSO fallback.
func (w *Watcher) groupSignature(c *ldap.Conn, dn string) (sig, kind string, err error) {
	filter := fmt.Sprintf("(|(distinguishedName=%s)(&(objectClass=group)(memberOf:%s:=%s)))", ldap.EscapeFilter(dn), inChain, ldap.EscapeFilter(dn))
	res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		filter, []string{"uSNChanged", "objectClass", "groupType"}, nil))
	if err != nil {
		return "", "", fmt.Errorf("reading group %s: %w", dn, err)
	}
	parts := make([]string, 0, len(res.Entries))
	kind = targetMissing
	for _, e := range res.Entries {
		parts = append(parts, strings.ToLower(e.DN)+"="+e.GetAttributeValue("uSNChanged"))
		if sameDN(e.DN, dn) {
			kind = targetKind(e)
		}
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "missing", targetMissing, nil
	}
	return strings.Join(parts, ";"), kind, nil
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

// policyWatch is the watcher's view of the policy within one session.
type policyWatch struct {
	key     string
	cur     policy
	saved   policyCursor
	members map[string]map[string]bool // tracked group -> member DNs, filled when first needed
	// unreadable: resultant PSOs users carry that the policy read did not
	// return (the bind account cannot read them), warned about once each,
	// across sessions.
	unreadable map[string]bool
	// stale: resultant PSOs missing from the policy but readable when
	// looked up (created since the last policy read); cleared at each read.
	stale map[string]bool
}

// startPolicy reads the policy at session start. A policy that changed
// while pwsync was down re-reads every user: who was affected is unknown.
func (w *Watcher) startPolicy(ctx context.Context, c *ldap.Conn) error {
	key := "policy." + strings.TrimPrefix(w.cfg.cursorKey(""), ".")
	pw := &policyWatch{key: key, members: map[string]map[string]bool{}, unreadable: map[string]bool{}, stale: map[string]bool{}}
	if w.pol != nil {
		pw.unreadable = w.pol.unreadable
	}
	raw, err := w.cursors.Load(ctx, key)
	if err != nil {
		return fmt.Errorf("loading cursor %s: %w", key, err)
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &pw.saved); err != nil {
			w.log.Warn().Err(err).Str("cursor", key).Msg("unreadable policy cursor; starting over")
		}
	}
	if pw.cur, err = w.readPolicy(c); err != nil {
		return err
	}
	w.pol, w.policyRev = pw, pw.saved.Rev
	// before any user is read: the PSO fallback needs the nested members
	// of the groups PSOs apply to, and a later change who left them
	if err := w.primeMembers(c); err != nil {
		return fmt.Errorf("reading policy group members: %w", err)
	}
	fp := pw.cur.fingerprint()
	switch {
	case pw.saved.Fingerprint == fp:
		return nil
	case pw.saved.Fingerprint == "": // first start: the full sync reads everyone anyway
		return w.savePolicy(ctx, fp, pw.saved.Rev)
	}
	w.log.Info().Str("fingerprint", fp).Msg("password policy changed while pwsync was down; re-reading every user")
	w.policyRev = pw.saved.Rev + 1
	if _, err := w.scan(ctx, c, w.cfg.UserFilter, false); err != nil {
		return fmt.Errorf("re-reading users after a policy change: %w", err)
	}
	return w.savePolicy(ctx, fp, w.policyRev)
}

func (w *Watcher) savePolicy(ctx context.Context, fp string, rev int64) error {
	cur := policyCursor{Fingerprint: fp, Rev: rev}
	raw, _ := json.Marshal(cur)
	if err := w.saveCursor(ctx, w.pol.key, raw); err != nil {
		return err
	}
	w.pol.saved = cur
	return nil
}

// checkPolicy re-reads the policy and re-reads the users a change affects.
func (w *Watcher) checkPolicy(ctx context.Context, c *ldap.Conn) error {
	if w.pol == nil {
		return nil
	}
	next, err := w.readPolicy(c)
	if err != nil {
		return err
	}
	fp := next.fingerprint()
	clear(w.pol.stale)
	if fp == w.pol.saved.Fingerprint {
		w.pol.cur = next // the same policy; keeps what the fingerprint leaves out (PSO GUIDs) current
		return nil
	}
	prev := w.pol.cur
	all, groups, direct := affected(prev, next)
	// the re-reads below compute fallback expiries from the new policy; if
	// they fail, the session ends and the next one, finding the saved
	// fingerprint different, re-reads everyone
	w.pol.cur = next
	w.policyRev = w.pol.saved.Rev + 1
	log := w.log.With().Int64("policy_rev", w.policyRev).Logger()
	if err := w.publishPolicy(ctx, next); err != nil {
		return err
	}
	if all {
		// groups may have changed in the same interval: their members too
		if err := w.primeMembers(c); err != nil {
			return fmt.Errorf("reading policy group members: %w", err)
		}
		log.Info().Dur("max_pwd_age", next.DomainMaxAge).Msg("domain maxPwdAge changed; re-reading every user")
		if _, err := w.scan(ctx, c, w.cfg.UserFilter, false); err != nil {
			return fmt.Errorf("re-reading users after a policy change: %w", err)
		}
	} else {
		dns := map[string]bool{}
		for _, d := range direct {
			dns[strings.ToLower(d)] = true
		}
		for _, g := range groups {
			now, err := w.members(c, g)
			if err != nil {
				return err
			}
			// members before and after: who left is affected as much as who joined
			for dn := range w.pol.members[strings.ToLower(g)] {
				dns[dn] = true
			}
			for dn := range now {
				dns[dn] = true
			}
			w.pol.members[strings.ToLower(g)] = now
		}
		log.Info().Strs("groups", groups).Int("users", len(dns)).Msg("password policy or group membership changed; re-reading the users concerned")
		if err := w.rereadDNs(ctx, c, slices.Sorted(mapKeys(dns))); err != nil {
			return err
		}
	}
	return w.savePolicy(ctx, fp, w.policyRev)
}

// primeMembers records the current members of every tracked group, so that
// a later change can tell who left. Run once per session, after the start.
func (w *Watcher) primeMembers(c *ldap.Conn) error {
	if w.pol == nil {
		return nil
	}
	for g := range w.pol.cur.Groups {
		m, err := w.members(c, g)
		if err != nil {
			return err
		}
		w.pol.members[g] = m
	}
	return nil
}

// affected compares two policies: all = everyone (maxPwdAge), else the
// groups whose members are concerned and DNs named directly by a PSO.
func affected(prev, next policy) (all bool, groups, direct []string) {
	if prev.DomainMaxAge != next.DomainMaxAge {
		return true, nil, nil
	}
	set := map[string]bool{}
	psoByDN := func(ps []pso) map[string]pso {
		m := map[string]pso{}
		for _, p := range ps {
			m[strings.ToLower(p.DN)] = p
		}
		return m
	}
	a, b := psoByDN(prev.PSOs), psoByDN(next.PSOs)
	for dn, p := range a {
		if q, ok := b[dn]; !ok || p.MaxAge != q.MaxAge || p.Precedence != q.Precedence || !slices.Equal(p.AppliesTo, q.AppliesTo) {
			for _, g := range p.AppliesTo {
				set[strings.ToLower(g)] = true
			}
		}
	}
	for dn, q := range b {
		if p, ok := a[dn]; !ok || p.MaxAge != q.MaxAge || p.Precedence != q.Precedence || !slices.Equal(p.AppliesTo, q.AppliesTo) {
			for _, g := range q.AppliesTo {
				set[strings.ToLower(g)] = true
			}
		}
	}
	for g, sig := range next.Groups {
		if prev.Groups[g] != sig {
			set[g] = true
		}
	}
	for g := range prev.Groups {
		if _, ok := next.Groups[g]; !ok {
			set[g] = true
		}
	}
	// a PSO may apply to a user directly: that DN is both "group" and member
	for g := range set {
		groups = append(groups, g)
		direct = append(direct, g)
	}
	slices.Sort(groups)
	slices.Sort(direct)
	return false, groups, direct
}

// rereadDNs publishes the current state of the users with these DNs.
func (w *Watcher) rereadDNs(ctx context.Context, c *ldap.Conn, dns []string) error {
	for batch := range slices.Chunk(dns, w.cfg.PageSize) {
		var b strings.Builder
		b.WriteString("(&" + w.cfg.UserFilter + "(|")
		for _, dn := range batch {
			b.WriteString("(distinguishedName=" + ldap.EscapeFilter(dn) + ")")
		}
		b.WriteString("))")
		res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, b.String(), userAttrs, nil))
		if err != nil {
			return fmt.Errorf("re-reading %d users: %w", len(batch), err)
		}
		users, err := w.complete(c, res.Entries, false)
		if err != nil {
			return err
		}
		if err := w.publish(ctx, users); err != nil {
			return err
		}
	}
	return nil
}

// publishPolicy records the new policy as an event (audit, replay).
func (w *Watcher) publishPolicy(ctx context.Context, p policy) error {
	if w.policySink == nil {
		return nil
	}
	ap := events.ADPolicy{Domain: w.cfg.Domain, Rev: w.policyRev, DomainMaxAge: p.DomainMaxAge}
	for _, x := range p.PSOs {
		ap.PSOs = append(ap.PSOs, events.PSO{DN: x.DN, Name: x.Name, Precedence: x.Precedence, MaxAge: x.MaxAge, AppliesTo: x.AppliesTo})
	}
	return w.policySink.PublishPolicy(ctx, ap)
}

// effectiveAge returns the maximum password age that applies to u and the
// policy's name: the resultant PSO when the DC told it, else the one
// resultantPSO picks, else the domain's. nested holds the (lower-case)
// tracked groups u is a member of through nesting, beyond u.MemberOf and
// u.Groups.
//
// known is false when the DC names a resultant PSO that the policy read did
// not return (not readable by the bind account): its maximum age is then
// unknown, and the domain's would be wrong.
func (p policy) effectiveAge(u events.ADUser, nested map[string]bool) (age time.Duration, name string, fromPSO, known bool) {
	if u.ResultantPSO != "" {
		for _, x := range p.PSOs {
			if strings.EqualFold(x.DN, u.ResultantPSO) {
				return x.MaxAge, x.Name, true, true
			}
		}
		return 0, psoCN(u.ResultantPSO), true, false
	}
	groups := make(map[string]bool, len(u.MemberOf)+len(u.Groups)+len(nested))
	for _, g := range slices.Concat(u.MemberOf, u.Groups) {
		groups[strings.ToLower(g)] = true
	}
	for g := range nested {
		groups[g] = true
	}
	if best := resultantPSO(p.PSOs, p.Targets, u.DN, groups); best != nil {
		return best.MaxAge, best.Name, true, true
	}
	return p.DomainMaxAge, "domain", false, true
}

// resultantPSO picks the PSO that applies to a user, as a DC constructs
// msDS-ResultantPSO (MS-ADTS 3.1.1.4.5.36), for when the DC does not say:
//
//  1. PSOs applied to the user itself (msDS-PSOAppliesTo holds its DN, i.e.
//     the user's msDS-PSOApplied) win over any applied through groups,
//     whatever their precedence; groups are looked at only when none is;
//  2. through groups, only global security groups count (targets says
//     which they are; see targetKind), nested membership included; the
//     primary group (primaryGroupID, not in memberOf) is not seen here;
//  3. then the lowest msDS-PasswordSettingsPrecedence;
//  4. on a tie, the lowest objectGUID, compared as the 16 bytes of the
//     binary GUID as LDAP returns it (memcmp of its NDR, little-endian
//     form), not as the GUID's string. This is Samba's pso_compare
//     (source4/dsdb/samdb/ldb_modules/operational.c), which calls
//     ndr_guid_compare (source4/dsdb/common/util_links.c: "the same order
//     as is used in DRS replication"); TestPSOFallbackAgreesWithDC checks
//     it against the DC's own answer on a pair where the two orders differ.
//
// userDN and the keys of groups and targets compare case-insensitively
// (groups and targets are lower case). Pure: the table test pins it.
func resultantPSO(psos []pso, targets map[string]string, userDN string, groups map[string]bool) *pso {
	var direct, viaGroup *pso
	for i := range psos {
		x := &psos[i]
		isDirect, isGroup := false, false
		for _, t := range x.AppliesTo {
			switch {
			case sameDN(t, userDN):
				isDirect = true
			case groups[strings.ToLower(t)] && targets[strings.ToLower(t)] == targetGlobalSecGrp:
				isGroup = true
			}
		}
		switch {
		case isDirect:
			if direct == nil || betterPSO(x, direct) {
				direct = x
			}
		case isGroup:
			if viaGroup == nil || betterPSO(x, viaGroup) {
				viaGroup = x
			}
		}
	}
	if direct != nil {
		return direct
	}
	return viaGroup
}

// betterPSO: lower precedence, then lower binary objectGUID (see
// resultantPSO); the DN only keeps the choice stable without GUIDs.
func betterPSO(a, b *pso) bool {
	if a.Precedence != b.Precedence {
		return a.Precedence < b.Precedence
	}
	if c := bytes.Compare(a.GUID, b.GUID); c != 0 {
		return c < 0
	}
	return compareFold(a.DN, b.DN) < 0
}

// psoCN is the cn of a PSO's DN.
func psoCN(dn string) string {
	first, _, _ := strings.Cut(dn, ",")
	if _, v, ok := strings.Cut(first, "="); ok {
		return v
	}
	return dn
}

// setExpiry fills Expiry, ExpirySource and PolicyName: the DC's computed
// value when it returned one, else pwdLastSet + the effective maximum age.
// nested: see effectiveAge.
func setExpiry(u *events.ADUser, p *policy, nested map[string]bool) {
	var name string
	var fromPSO bool
	var age time.Duration
	known := true
	if p != nil {
		age, name, fromPSO, known = p.effectiveAge(*u, nested)
	}
	u.PolicyName = name
	switch {
	case u.Deleted:
		return
	case u.PwdLastSet == 0:
		u.Expiry, u.ExpirySource = 0, events.ExpirySourceMustChange
	case u.NeverExpires() || u.ExpiryComputed == events.FileTimeNeverExpires:
		u.Expiry, u.ExpirySource = events.FileTimeNeverExpires, events.ExpirySourceNever
	case u.ExpiryComputed > 0:
		u.Expiry, u.ExpirySource = u.ExpiryComputed, events.ExpirySourceComputed
	case p == nil, !known:
		// no computed value and no (readable) policy: unknown, nothing scheduled
	case age == 0:
		u.Expiry, u.ExpirySource = events.FileTimeNeverExpires, events.ExpirySourceNever
	default:
		u.Expiry = u.PwdLastSet + int64(age/100)
		u.ExpirySource = events.ExpirySourceDomain
		if fromPSO {
			u.ExpirySource = events.ExpirySourcePSO
		}
	}
}

// resolveGroups fills each user's Groups: the configured groups of interest
// it is a member of, nested membership included (one in-chain search per
// group per batch).
func (w *Watcher) resolveGroups(c *ldap.Conn, entries []*ldap.Entry, users []events.ADUser) error {
	if len(w.cfg.Groups) == 0 || len(users) == 0 {
		return nil
	}
	raws := make([][]byte, 0, len(entries))
	for _, e := range entries {
		raws = append(raws, e.GetRawAttributeValue("objectGUID"))
	}
	idx := make(map[string]int, len(users))
	for i, u := range users {
		idx[u.ObjectGUID] = i
	}
	for _, g := range w.cfg.Groups {
		filter := fmt.Sprintf("(&%s(memberOf:%s:=%s))", anyGUID(raws), inChain, ldap.EscapeFilter(g))
		res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, filter, []string{"objectGUID"}, nil))
		if err != nil {
			return fmt.Errorf("resolving members of %s: %w", g, err)
		}
		for _, e := range res.Entries {
			guid, err := events.GUIDString(e.GetRawAttributeValue("objectGUID"))
			if err != nil {
				continue
			}
			if i, ok := idx[guid]; ok {
				users[i].Groups = append(users[i].Groups, g)
			}
		}
	}
	return nil
}

// complete turns entries into users with their groups, expiry and policy revision.
func (w *Watcher) complete(c *ldap.Conn, entries []*ldap.Entry, fullSync bool) ([]events.ADUser, error) {
	users := w.toUsers(entries, fullSync)
	if err := w.resolveGroups(c, entries, users); err != nil {
		return nil, err
	}
	var p *policy
	if w.pol != nil {
		p = &w.pol.cur
	}
	for i := range users {
		setExpiry(&users[i], p, w.nestedPSOGroups(users[i]))
		users[i].PolicyRev = w.policyRev
		w.checkReadablePSO(c, users[i])
	}
	return users, nil
}

// nestedPSOGroups returns the global security groups PSOs apply to that u
// is a member of, nested membership included, from the member lists the
// policy watch keeps (primed at session start, refreshed when a group
// changes); nil when no PSO could need it.
func (w *Watcher) nestedPSOGroups(u events.ADUser) map[string]bool {
	if w.pol == nil || u.ResultantPSO != "" {
		return nil
	}
	dn := strings.ToLower(u.DN)
	var out map[string]bool
	for g, kind := range w.pol.cur.Targets {
		if kind == targetGlobalSecGrp && w.pol.members[g][dn] {
			if out == nil {
				out = map[string]bool{}
			}
			out[g] = true
		}
	}
	return out
}

// checkReadablePSO warns, once per PSO, when a user carries
// msDS-ResultantPSO but the policy read returned no such PSO: the bind
// account cannot read the Password Settings Container (AD's default for
// non-admins). The DC's computed expiry still applies; only the fallback
// and the change watch of that PSO are blind. `pwsync doctor` checks it.
func (w *Watcher) checkReadablePSO(c *ldap.Conn, u events.ADUser) {
	key := strings.ToLower(u.ResultantPSO)
	if w.pol == nil || key == "" || w.pol.unreadable[key] || w.pol.stale[key] {
		return
	}
	if slices.ContainsFunc(w.pol.cur.PSOs, func(x pso) bool { return strings.EqualFold(x.DN, u.ResultantPSO) }) {
		return
	}
	// A PSO created since the last policy read is readable, just not read
	// yet: the next policy poll brings it (and re-reads its users).
	res, err := c.Search(ldap.NewSearchRequest(u.ResultantPSO, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=msDS-PasswordSettings)", []string{"cn"}, nil))
	if err == nil && len(res.Entries) == 1 {
		w.pol.stale[key] = true
		return
	}
	w.pol.unreadable[key] = true
	w.log.Warn().Str("pso", u.ResultantPSO).Str("example_user", u.DN).Int("psos_read", len(w.pol.cur.PSOs)).
		Msg("users carry msDS-ResultantPSO but the bind account cannot read that PSO: its changes are not watched and expiry " +
			"falls back to nothing when msDS-UserPasswordExpiryTimeComputed is missing; grant the bind account read on " +
			"CN=Password Settings Container,CN=System (pwsync doctor checks it)")
}

func compareFold(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) }

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

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
