// Watching the domain policy and the PSOs, and re-reading the users a change affects.

package adwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

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
	if _, err := w.scanAll(ctx, c, false); err != nil {
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
		if _, err := w.scanAll(ctx, c, false); err != nil {
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

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
