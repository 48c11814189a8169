package adwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

// DirSync flags. ObjectSecurity makes the DC check the caller's read access per
// object instead of demanding the "Replicating Directory Changes" right, as
// with Entra Connect's account; an administrator gets the same answers.
const dirSyncObjectSecurity = 0x1

// DirSync runs two streams, each with its own cookie. Both filters are
// structural, not the configured UserFilter: DirSync evaluates the filter on
// an object's current state, so a filter on e.g. userAccountControl would
// hide exactly the changes that take a user out of it.
//
// usersStream reports changed live users. Its filter is indexed, so a poll
// costs about the same however many deleted objects the domain holds.
// deletedStream reports deleted users: tombstones lose objectCategory (and
// sAMAccountType) but keep objectClass, whose index also holds every
// tombstone; on Samba that poll costs ~5 us per tombstone, so it runs at the
// poll interval only, not on every change notification (Samba does not
// notify deletions anyway).
var (
	usersStream = stream{
		name:   "users",
		filter: "(&(objectCategory=person)(objectClass=user))",
		// the attributes whose change makes DirSync report a user; changes of
		// anything else (description, lastLogonTimestamp...) are not reported.
		// Constructed attributes and memberOf never appear in deltas.
		attrs: []string{"objectGUID", "pwdLastSet", "userAccountControl", "userPrincipalName",
			"sAMAccountName", "mail", "displayName", "name"},
	}
	deletedStream = stream{
		name:   "deleted",
		filter: "(&(isDeleted=TRUE)(objectClass=user)(!(objectClass=computer)))",
		attrs:  []string{"objectGUID", "isDeleted"},
	}
)

// stream is one DirSync query.
type stream struct {
	name   string
	filter string
	attrs  []string
}

// noObjectFilter matches nothing (no object has the all-zero GUID) through the
// objectGUID index, so a DirSync with it returns at once with a cookie for
// "now": the starting point of a full sync, without enumerating the domain.
// A cookie is a position in the DC's change history, valid with any filter.
const noObjectFilter = `(&(objectClass=user)(objectGUID=\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00))`

// cookieSaveEvery bounds how stale a saved cookie gets while nothing relevant
// changes: the cookies still move with the rest of the domain.
const cookieSaveEvery = time.Minute

// dirSyncCursor is what is saved per domain: one cookie per stream.
type dirSyncCursor struct {
	Users   []byte `json:"users"`
	Deleted []byte `json:"deleted"`
}

// dirSync reads changes with the DirSync control.
type dirSync struct {
	w       *Watcher
	key     string
	cur     dirSyncCursor
	saved   []byte // the cursor as last saved
	savedAt time.Time
}

// errDirSyncRefused means this DC will not serve DirSync to this account at this base.
var errDirSyncRefused = errors.New("DirSync refused")

// errCookieRejected means the DC no longer accepts a saved cookie.
var errCookieRejected = errors.New("DirSync cookie rejected")

func (w *Watcher) newDirSync() *dirSync {
	return &dirSync{w: w, key: w.cfg.cursorKey(ModeDirSync)}
}

// decodeDirSyncCursor reads a saved cursor; false means unusable (a full sync).
func decodeDirSyncCursor(raw []byte) (dirSyncCursor, bool) {
	var cur dirSyncCursor
	if err := json.Unmarshal(raw, &cur); err != nil || len(cur.Users) == 0 || len(cur.Deleted) == 0 {
		return dirSyncCursor{}, false
	}
	return cur, true
}

// request is a DirSync search; DirSync works on the naming context root only.
func (s *dirSync) request(filter string, attrs []string) *ldap.SearchRequest {
	return ldap.NewSearchRequest(s.w.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, filter, attrs, nil)
}

// nowCookie returns a cookie for the DC's current position. It is also the
// cheap way to learn whether the DC grants DirSync at all.
func (s *dirSync) nowCookie(c *ldap.Conn) ([]byte, error) {
	res, err := c.DirSync(s.request(noObjectFilter, []string{"objectGUID"}), dirSyncObjectSecurity, 0, nil)
	if err != nil {
		switch ldapCode(err) {
		// 50: no right; 53: e.g. base is not a naming context root; 12: no DirSync on this server
		case ldap.LDAPResultInsufficientAccessRights, ldap.LDAPResultUnwillingToPerform,
			ldap.LDAPResultUnavailableCriticalExtension:
			return nil, fmt.Errorf("%w at %s: %w", errDirSyncRefused, s.w.cfg.BaseDN, err)
		}
		return nil, fmt.Errorf("starting DirSync at %s: %w", s.w.cfg.BaseDN, err)
	}
	ctl, ok := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync)
	if !ok || len(ctl.Cookie) == 0 {
		return nil, fmt.Errorf("%w at %s: the answer has no DirSync cookie", errDirSyncRefused, s.w.cfg.BaseDN)
	}
	return ctl.Cookie, nil
}

// start resumes from the saved cookies, or runs a full sync when there are none.
func (s *dirSync) start(ctx context.Context, c *ldap.Conn) error {
	raw, err := s.w.cursors.Load(ctx, s.key)
	if err != nil {
		return fmt.Errorf("loading cursor %s: %w", s.key, err)
	}
	if raw != nil {
		cur, ok := decodeDirSyncCursor(raw)
		if !ok {
			s.w.log.Warn().Str("cursor", s.key).Msg("unreadable DirSync cursor; running a full sync")
			return s.fullSync(ctx, c)
		}
		s.cur, s.saved, s.savedAt = cur, raw, time.Now()
		s.w.log.Info().Str("cursor", s.key).Msg("resuming DirSync from the saved cookies")
		return nil
	}
	return s.fullSync(ctx, c)
}

// fullSync publishes every user's state (FullSync=true) and then saves a
// cookie taken before the scan: a change during the scan is published by the
// scan and again by the next delta, never lost (the same state has the same
// event ID, so JetStream drops the repeat).
func (s *dirSync) fullSync(ctx context.Context, c *ldap.Conn) error {
	start := time.Now()
	cookie, err := s.nowCookie(c)
	if err != nil {
		return err
	}
	n, err := s.w.scanAll(ctx, c, true)
	if err != nil {
		return fmt.Errorf("full sync: %w", err)
	}
	// the marker before the cursor: a crash in between scans again
	if err := s.w.fullSyncDone(ctx, n, start); err != nil {
		return err
	}
	s.cur = dirSyncCursor{Users: cookie, Deleted: cookie}
	if err := s.save(ctx, true); err != nil {
		return err
	}
	s.w.log.Info().Int("users", n).Dur("took", time.Since(start)).Msg("full sync done")
	return nil
}

// poll publishes the users changed since the cookies; deletions only on the
// periodic poll (see deletedStream).
func (s *dirSync) poll(ctx context.Context, c *ldap.Conn, periodic bool) error {
	err := s.sync(ctx, c, usersStream, &s.cur.Users)
	if err == nil && periodic {
		err = s.sync(ctx, c, deletedStream, &s.cur.Deleted)
	}
	if errors.Is(err, errCookieRejected) {
		s.w.log.Warn().Err(err).Str("cursor", s.key).Msg("the DC rejected a DirSync cookie; running a full sync")
		return s.fullSync(ctx, c)
	}
	return err
}

// sync reads one stream's changes since its cookie, publishes them and saves
// the new cookie after each batch.
func (s *dirSync) sync(ctx context.Context, c *ldap.Conn, st stream, cookie *[]byte) error {
	for {
		res, err := c.DirSync(s.request(st.filter, st.attrs), dirSyncObjectSecurity, 0, *cookie)
		if err != nil {
			if cookieRejected(err) {
				return fmt.Errorf("%w (%s stream): %w", errCookieRejected, st.name, err)
			}
			return fmt.Errorf("DirSync of %s at %s: %w", st.name, s.w.cfg.BaseDN, err)
		}
		ctl, ok := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync)
		if !ok || len(ctl.Cookie) == 0 {
			return fmt.Errorf("DirSync of %s at %s: the answer has no DirSync cookie", st.name, s.w.cfg.BaseDN)
		}
		n, err := s.publishChanges(ctx, c, res.Entries)
		if err != nil {
			return err
		}
		*cookie = ctl.Cookie
		if err := s.save(ctx, n > 0); err != nil {
			return err
		}
		if n > 0 {
			s.w.log.Info().Str("stream", st.name).Int("users", n).Msg("published AD changes")
		}
		// AD answers in pages of at most a few thousand objects and sets a
		// non-zero flag while more are waiting.
		if ctl.Flags == 0 {
			return nil
		}
	}
}

// cookieRejected tells a stale or foreign cookie (e.g. a restored DC) from
// other failures; Samba answers 12 to a cookie it cannot parse.
func cookieRejected(err error) bool {
	switch ldapCode(err) {
	case ldap.LDAPResultUnavailableCriticalExtension, ldap.LDAPResultProtocolError, ldap.LDAPResultUnwillingToPerform:
		return true
	}
	return false
}

// publishChanges turns DirSync entries (only the changed attributes) into full
// user states, batch by batch.
func (s *dirSync) publishChanges(ctx context.Context, c *ldap.Conn, entries []*ldap.Entry) (int, error) {
	var changed [][]byte
	var deleted []tombstone
	for _, e := range entries {
		raw := e.GetRawAttributeValue("objectGUID")
		if len(raw) != 16 {
			s.w.log.Warn().Str("dn", e.DN).Msg("DirSync entry without a valid objectGUID; skipped")
			continue
		}
		if e.GetAttributeValue("isDeleted") == "TRUE" {
			deleted = append(deleted, tombstone{raw: raw, dn: e.DN})
		} else {
			changed = append(changed, raw)
		}
	}
	// Deletions first: then the last thing before saving the cookie is a
	// publish, and a shutdown right after it still records the progress.
	total := 0
	for batch := range slices.Chunk(deleted, s.w.cfg.PageSize) {
		users, err := s.w.readDeleted(c, s.w.cfg.BaseDN, batch)
		if err != nil {
			return total, err
		}
		if err := s.w.publish(ctx, users); err != nil {
			return total, err
		}
		total += len(users)
	}
	for batch := range slices.Chunk(changed, s.w.cfg.PageSize) {
		users, err := s.w.readUsers(c, batch)
		if err != nil {
			return total, err
		}
		if err := s.w.publish(ctx, users); err != nil {
			return total, err
		}
		total += len(users)
	}
	return total, nil
}

// save stores the cookies when something was published with them, or when
// the saved ones have grown old; they are the restart point.
func (s *dirSync) save(ctx context.Context, published bool) error {
	raw, err := json.Marshal(s.cur)
	if err != nil {
		return fmt.Errorf("encoding cursor %s: %w", s.key, err)
	}
	if bytes.Equal(raw, s.saved) || (!published && time.Since(s.savedAt) < cookieSaveEvery) {
		return nil
	}
	if err := s.w.saveCursor(ctx, s.key, raw); err != nil {
		return err
	}
	s.saved, s.savedAt = raw, time.Now()
	return nil
}

// tombstone is a deleted user as a delta reports it.
type tombstone struct {
	raw []byte // objectGUID
	dn  string // under CN=Deleted Objects
}

// readDeleted reads deleted users' tombstones (Show Deleted, below ncRoot) for
// their uSNChanged, which makes the event ID, and sAMAccountName. A tombstone
// that is already gone still yields a Deleted event, with uSNChanged 0.
func (w *Watcher) readDeleted(c *ldap.Conn, ncRoot string, dead []tombstone) ([]events.ADUser, error) {
	raws := make([][]byte, len(dead))
	for i, d := range dead {
		raws[i] = d.raw
	}
	res, err := c.Search(ldap.NewSearchRequest(ncRoot, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(&(isDeleted=TRUE)"+anyGUID(raws)+")",
		[]string{"objectGUID", "sAMAccountName", "uSNChanged"},
		[]ldap.Control{ldap.NewControlMicrosoftShowDeleted()}))
	if err != nil {
		return nil, fmt.Errorf("reading %d deleted users: %w", len(dead), err)
	}
	found := make(map[string]*ldap.Entry, len(res.Entries))
	for _, e := range res.Entries {
		found[string(e.GetRawAttributeValue("objectGUID"))] = e
	}
	users := make([]events.ADUser, 0, len(dead))
	for _, d := range dead {
		u, err := w.deletedUser(d.raw, d.dn)
		if err != nil {
			w.log.Warn().Err(err).Str("dn", d.dn).Msg("skipping deleted user")
			continue
		}
		if e, ok := found[string(d.raw)]; ok {
			u.DN = e.DN
			u.SAMAccountName = e.GetAttributeValue("sAMAccountName")
			if u.USNChanged, err = strconv.ParseInt(e.GetAttributeValue("uSNChanged"), 10, 64); err != nil {
				w.log.Warn().Err(err).Str("dn", e.DN).Msg("tombstone without a valid uSNChanged")
			}
		}
		users = append(users, u)
	}
	return users, nil
}

// deletedUser is the event of a deleted user. Its PwdLastSet is 0 like a
// must-change user's: consumers check Deleted first.
func (w *Watcher) deletedUser(raw []byte, dn string) (events.ADUser, error) {
	guid, err := events.GUIDString(raw)
	if err != nil {
		return events.ADUser{}, fmt.Errorf("deleted object %s: %w", dn, err)
	}
	return events.ADUser{Domain: w.cfg.Domain, ObjectGUID: guid, ImmutableID: events.ImmutableID(raw), DN: dn, Deleted: true}, nil
}
