package adwatch

import (
	"context"
	"fmt"
	"slices"
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
	attrConsistencyGUID, attrReplMeta,
}

// attrReplMeta is the replication metadata: pwdLastSet's version in it
// orders password states read from different DCs (replmeta.go).
const attrReplMeta = "replPropertyMetaData"

// constructedAttrs are the attributes of userAttrs the DC computes on read.
// Each costs the DC per entry (on Samba 22-33 s per 10,000 users, against
// 11 s for all the stored ones): a read of every user leaves them out and
// computes what they say itself (setExpiry), see storedUserAttrs.
var constructedAttrs = []string{
	"msDS-User-Account-Control-Computed", "msDS-UserPasswordExpiryTimeComputed", "msDS-ResultantPSO",
}

// storedUserAttrs is userAttrs without the constructed ones, plus
// primaryGroupID: the resultant PSO computed locally needs the primary
// group, which memberOf does not list.
var storedUserAttrs = append(slices.DeleteFunc(slices.Clone(userAttrs), func(a string) bool {
	return slices.Contains(constructedAttrs, a)
}), attrPrimaryGroupID)

const attrPrimaryGroupID = "primaryGroupID"

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
		DC:             w.dcID(),
	}
	if blob := e.GetRawAttributeValue(attrReplMeta); len(blob) > 0 {
		// Unreadable metadata leaves the version unknown (0): states from
		// one DC still order by USN; only a DC switch needs it.
		if v, err := pwdLastSetVersion(blob); err == nil {
			u.PwdVersion = v
		} else {
			w.log.Debug().Err(err).Str("dn", e.DN).Msg("replPropertyMetaData not understood")
		}
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

// scanAll reads every user of the domain (a full sync, or a policy change
// that concerns everyone). It reads the stored attributes only, and
// computes what the constructed ones say (setExpiry), when the policy read
// holds every PSO; else, as scan, all of userAttrs.
func (w *Watcher) scanAll(ctx context.Context, c *ldap.Conn, fullSync bool) (int, error) {
	attrs, err := w.scanAttrs(c)
	if err != nil {
		return 0, err
	}
	return w.scanWith(ctx, c, w.cfg.UserFilter, attrs, fullSync)
}

// scanAttrs: storedUserAttrs when the policy is complete, else userAttrs.
func (w *Watcher) scanAttrs(c *ldap.Conn) ([]string, error) {
	if w.pol == nil {
		return userAttrs, nil
	}
	missing, err := w.unreadablePSOs(c, w.pol.cur)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		w.log.Warn().Strs("psos", missing).Msg("the bind account cannot read every PSO: reading every user with the DC's " +
			"constructed attributes (several times slower); grant it read on CN=Password Settings Container,CN=System " +
			"to make full syncs fast")
		return userAttrs, nil
	}
	return storedUserAttrs, nil
}

// scan reads every user matching filter below BaseDN with userAttrs, page
// by page, and publishes each page: memory stays at one page whatever the
// domain's size.
func (w *Watcher) scan(ctx context.Context, c *ldap.Conn, filter string, fullSync bool) (int, error) {
	return w.scanWith(ctx, c, filter, userAttrs, fullSync)
}

// scanWith pipelines the scan: while one page is being stored (Publish
// waits for JetStream's acks) the next is read from the DC, so a full sync
// costs about the slower of the two rather than their sum. Pages are
// published in order, at most one waiting: memory stays at two pages.
func (w *Watcher) scanWith(ctx context.Context, c *ldap.Conn, filter string, attrs []string, fullSync bool) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan []events.ADUser, 1)
	published := make(chan error, 1)
	total := 0
	go func() { // owned: ends when pages is closed or ctx ends, and reports once
		var err error
		for users := range pages {
			if err == nil {
				if err = w.publish(ctx, users); err != nil {
					cancel() // stops the reader at its next send
				} else {
					total += len(users)
				}
			}
		}
		published <- err
	}()
	readErr := w.readPages(ctx, c, filter, attrs, fullSync, pages)
	close(pages)
	pubErr := <-published // after this, total is the publisher's no more
	if pubErr != nil {
		return total, pubErr
	}
	return total, readErr
}

// readPages reads the pages of a scan and hands each to pages.
func (w *Watcher) readPages(ctx context.Context, c *ldap.Conn, filter string, attrs []string, fullSync bool, pages chan<- []events.ADUser) error {
	paging := ldap.NewControlPaging(uint32(w.cfg.PageSize))
	for {
		req := ldap.NewSearchRequest(w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, filter, attrs, []ldap.Control{paging})
		res, err := c.Search(req)
		if err != nil {
			return fmt.Errorf("searching %s for %s: %w", w.cfg.BaseDN, filter, err)
		}
		users, err := w.complete(c, res.Entries, fullSync)
		if err != nil {
			return err
		}
		select {
		case pages <- users:
		case <-ctx.Done():
			return ctx.Err()
		}
		resp, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if !ok || len(resp.Cookie) == 0 {
			return nil
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
