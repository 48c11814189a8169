// A user's resultant PSO and password expiry, and the PSO group resolution it needs.

package adwatch

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

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

// uacNoExpiry are the userAccountControl flags besides DONT_EXPIRE_PASSWD
// for which a DC computes "never" (Samba's _UF_NO_EXPIRY_ACCOUNTS):
// SMARTCARD_REQUIRED and the trust accounts (interdomain, workstation,
// server).
const uacNoExpiry = 0x40000 | 0x800 | 0x1000 | 0x2000

// setExpiry fills Expiry, ExpirySource and PolicyName: the DC's computed
// value when it returned one, else pwdLastSet + the effective maximum age,
// as the DC computes msDS-UserPasswordExpiryTimeComputed (MS-ADTS
// 3.1.1.4.5.24; Samba's get_msds_user_password_expiry_time_computed). Where
// it differs from the DC: pwdLastSet 0 is must-change (Expiry 0) even with
// DONT_EXPIRE_PASSWD, where the DC says never (neither expires: see
// events.ADUser.PasswordExpiry); and Windows AD since 2016 lets
// smartcard-only accounts expire when the domain says so
// (msDS-ExpirePasswordsOnSmartCardOnlyAccounts), which is not read here.
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
	case u.UserAccountControl&uacNoExpiry != 0, age == 0:
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
	primary := primaryGroups(entries)
	for i := range users {
		setExpiry(&users[i], p, w.nestedPSOGroups(users[i], primary[strings.ToLower(users[i].DN)]))
		users[i].PolicyRev = w.policyRev
		w.checkReadablePSO(c, users[i])
	}
	return users, nil
}

// nestedPSOGroups returns the global security groups PSOs apply to that u
// is a member of, nested membership included, from the member lists the
// policy watch keeps (primed at session start, refreshed when a group
// changes), plus its primary group (primaryRID, 0 = not read) when a PSO
// applies to it; nil when no PSO could need it. A group the primary group
// is nested in is not seen (memberOf lists neither).
func (w *Watcher) nestedPSOGroups(u events.ADUser, primaryRID uint32) map[string]bool {
	if w.pol == nil || u.ResultantPSO != "" {
		return nil
	}
	dn := strings.ToLower(u.DN)
	var out map[string]bool
	add := func(g string) {
		if out == nil {
			out = map[string]bool{}
		}
		out[g] = true
	}
	for g, kind := range w.pol.cur.Targets {
		if kind == targetGlobalSecGrp && w.pol.members[g][dn] {
			add(g)
		}
	}
	if g, ok := w.pol.cur.PrimaryRIDs[primaryRID]; ok && primaryRID != 0 {
		add(g)
	}
	return out
}

// primaryGroups maps each entry's DN (lower case) to its primaryGroupID,
// when it was read.
func primaryGroups(entries []*ldap.Entry) map[string]uint32 {
	out := map[string]uint32{}
	for _, e := range entries {
		if v, err := strconv.ParseUint(e.GetAttributeValue(attrPrimaryGroupID), 10, 32); err == nil {
			out[strings.ToLower(e.DN)] = uint32(v)
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
