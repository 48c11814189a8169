package adwatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

// userAttrs is a user's full password-relevant state. The msDS-* ones are
// constructed: the DC computes them on read, they never appear in deltas.
var userAttrs = []string{
	"objectGUID", "distinguishedName", "sAMAccountName", "userPrincipalName", "mail", "displayName",
	"pwdLastSet", "userAccountControl", "msDS-User-Account-Control-Computed",
	"msDS-UserPasswordExpiryTimeComputed", "msDS-ResultantPSO", "memberOf", "uSNChanged", "preferredLanguage",
	attrConsistencyGUID,
}

// attrConsistencyGUID is Entra Connect's recommended sourceAnchor: a copy of
// objectGUID that survives moving a user between forests.
const attrConsistencyGUID = "mS-DS-ConsistencyGuid"

// toUser builds the event state from an entry read with userAttrs. Attributes
// that decide enforcement must be present: a missing pwdLastSet would read as
// 0, "must change", and force a password change on someone by mistake.
func (w *Watcher) toUser(e *ldap.Entry, fullSync bool) (events.ADUser, error) {
	raw := e.GetRawAttributeValue("objectGUID")
	guid, err := events.GUIDString(raw)
	if err != nil {
		return events.ADUser{}, fmt.Errorf("user %s: %w", e.DN, err)
	}
	u := events.ADUser{
		Domain:         w.cfg.Domain,
		ObjectGUID:     guid,
		ImmutableID:    w.immutableID(e, raw),
		DN:             e.DN,
		SAMAccountName: e.GetAttributeValue("sAMAccountName"),
		UPN:            e.GetAttributeValue("userPrincipalName"),
		Mail:           e.GetAttributeValue("mail"),
		DisplayName:    e.GetAttributeValue("displayName"),
		ResultantPSO:   e.GetAttributeValue("msDS-ResultantPSO"),
		MemberOf:       e.GetAttributeValues("memberOf"),
		Language:       e.GetAttributeValue("preferredLanguage"),
		FullSync:       fullSync,
	}
	for _, f := range []struct {
		attr     string
		dst      *int64
		required bool
	}{
		{"pwdLastSet", &u.PwdLastSet, true},
		{"userAccountControl", &u.UserAccountControl, true},
		{"uSNChanged", &u.USNChanged, true},
		{"msDS-User-Account-Control-Computed", &u.UACComputed, false},
		{"msDS-UserPasswordExpiryTimeComputed", &u.ExpiryComputed, false},
	} {
		v := e.GetAttributeValue(f.attr)
		if v == "" {
			if f.required {
				return events.ADUser{}, fmt.Errorf("user %s: %s is missing (not readable by the bind account?)", e.DN, f.attr)
			}
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return events.ADUser{}, fmt.Errorf("user %s: %s %q: %w", e.DN, f.attr, v, err)
		}
		*f.dst = n
	}
	return u, nil
}

// toUsers converts a page of entries; a user that cannot be read safely is
// logged and left out, it does not stop the others.
func (w *Watcher) toUsers(entries []*ldap.Entry, fullSync bool) []events.ADUser {
	users := make([]events.ADUser, 0, len(entries))
	for _, e := range entries {
		u, err := w.toUser(e, fullSync)
		if err != nil {
			w.log.Warn().Err(err).Str("dn", e.DN).Msg("skipping user")
			continue
		}
		users = append(users, u)
	}
	return users
}

// guidFilter matches one objectGUID: every raw byte escaped as \xx.
func guidFilter(raw []byte) string {
	var b strings.Builder
	b.Grow(13 + 3*len(raw))
	b.WriteString("(objectGUID=")
	for _, c := range raw {
		fmt.Fprintf(&b, `\%02x`, c)
	}
	b.WriteByte(')')
	return b.String()
}

// anyGUID matches any of the given objectGUIDs.
func anyGUID(raws [][]byte) string {
	var b strings.Builder
	b.WriteString("(|")
	for _, r := range raws {
		b.WriteString(guidFilter(r))
	}
	b.WriteByte(')')
	return b.String()
}

// readUsers reads the full state of the users with the given objectGUIDs that
// match the user filter. Users deleted since are simply not found.
func (w *Watcher) readUsers(c *ldap.Conn, raws [][]byte) ([]events.ADUser, error) {
	filter := "(&" + w.cfg.UserFilter + anyGUID(raws) + ")"
	res, err := c.Search(ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, filter, userAttrs, nil))
	if err != nil {
		return nil, fmt.Errorf("reading %d changed users: %w", len(raws), err)
	}
	return w.complete(c, res.Entries, false)
}

// scan reads every user matching filter below BaseDN, page by page, and
// publishes each page: memory stays at one page whatever the domain's size.
func (w *Watcher) scan(ctx context.Context, c *ldap.Conn, filter string, fullSync bool) (int, error) {
	paging := ldap.NewControlPaging(uint32(w.cfg.PageSize))
	total := 0
	for {
		req := ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, filter, userAttrs, []ldap.Control{paging})
		res, err := c.Search(req)
		if err != nil {
			return total, fmt.Errorf("searching %s for %s: %w", w.cfg.BaseDN, filter, err)
		}
		users, err := w.complete(c, res.Entries, fullSync)
		if err != nil {
			return total, err
		}
		if err := w.publish(ctx, users); err != nil {
			return total, err
		}
		total += len(users)
		resp, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if !ok || len(resp.Cookie) == 0 {
			return total, nil
		}
		paging.SetCookie(resp.Cookie)
	}
}

// publish hands a batch to the sink, which returns once it is stored.
func (w *Watcher) publish(ctx context.Context, users []events.ADUser) error {
	if len(users) == 0 {
		return nil
	}
	if err := w.sink.Publish(ctx, users); err != nil {
		return fmt.Errorf("publishing %d users: %w", len(users), err)
	}
	for _, u := range users {
		w.log.Debug().Str("object_guid", u.ObjectGUID).Str("dn", u.DN).Int64("usn_changed", u.USNChanged).
			Int64("pwd_last_set", u.PwdLastSet).Int64("user_account_control", u.UserAccountControl).
			Bool("deleted", u.Deleted).Bool("full_sync", u.FullSync).Msg("published user")
	}
	return nil
}

// immutableID is the cloud anchor of a user: base64 of objectGUID, or of
// mS-DS-ConsistencyGuid when that is the configured anchor and is set
// (Entra Connect falls back to objectGUID when it is empty).
func (w *Watcher) immutableID(e *ldap.Entry, objectGUID []byte) string {
	if w.cfg.Anchor == AnchorConsistencyGUID {
		if v := e.GetRawAttributeValue(attrConsistencyGUID); len(v) == 16 {
			return events.ImmutableID(v)
		}
	}
	return events.ImmutableID(objectGUID)
}
