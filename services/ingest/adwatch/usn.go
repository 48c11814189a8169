package adwatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
)

// usnCursor is the uSNChanged watermark. USNs are local to one DC, and to
// one life of its database, so the cursor names both: resuming against
// another DC, or the same DC restored from a backup (a new invocationId),
// starts over with a full sync.
//
// The DirSync cookie (dirsync.go) needs none of this: it carries the DC's
// own up-to-dateness vector, keyed by invocationId, and the DC itself sends
// what the vector does not cover.
type usnCursor struct {
	DC string `json:"dc"` // the DC's dnsHostName
	// InvocationID is the DC's invocationId (its nTDSDSA object's) when
	// the watermark was read; empty in cursors written before pwsync keyed
	// them by it, and when the bind account cannot read it.
	InvocationID string `json:"invocation_id,omitempty"`
	USN          int64  `json:"usn"` // every change up to this USN is published
}

// auditKind is the audit record kind of what ingest itself decides.
const auditKind = "ingest"

// usnPoll reads changes by polling uSNChanged: it needs only read access, and
// works below any base, not just a naming context root.
type usnPoll struct {
	w       *Watcher
	key     string
	cur     usnCursor
	savedAt time.Time
	ncRoot  string // where tombstones live (CN=Deleted Objects,<ncRoot>)
	// noInvocationID: the invocationId could not be read (warned once);
	// the cursor is then keyed by host name only, as before.
	noInvocationID bool
}

func (w *Watcher) newUSNPoll() *usnPoll {
	return &usnPoll{w: w, key: w.cfg.cursorKey(ModeUSN)}
}

func (s *usnPoll) start(ctx context.Context, c *ldap.Conn) error {
	dse, id, err := s.identify(c)
	if err != nil {
		return err
	}
	s.ncRoot = dse.DefaultNamingContext
	if s.ncRoot == "" {
		s.ncRoot = s.w.cfg.BaseDN
	}
	raw, err := s.loadCursor(ctx, dse)
	if err != nil {
		return err
	}
	if raw != nil {
		var cur usnCursor
		switch err := json.Unmarshal(raw, &cur); {
		case err != nil:
			s.w.log.Warn().Err(err).Str("cursor", s.key).Msg("unreadable USN cursor; running a full sync")
		case !strings.EqualFold(cur.DC, dse.DNSHostName):
			s.w.log.Warn().Str("cursor", s.key).Str("cursor_dc", cur.DC).Str("dc", dse.DNSHostName).
				Msg("the USN cursor is another DC's; running a full sync")
		case s.rolledBack(cur, dse, id):
			if err := s.dcRestored(ctx, cur, dse, id); err != nil {
				return err
			}
		case cur.InvocationID == "" && id != "":
			// A cursor from before pwsync keyed it by invocationId, on the
			// same host: migrated as it is, without a full sync. Had the DC
			// been restored since that cursor was written, nothing here
			// could tell; from now on a restore is noticed.
			cur.InvocationID = id
			if err := s.save(ctx, cur, true); err != nil {
				return err
			}
			s.w.log.Info().Str("cursor", s.key).Int64("usn", cur.USN).Str("invocation_id", id).
				Msg("USN cursor of an older pwsync: keyed by the DC's invocationId now, resuming without a full sync")
			return nil
		default:
			s.cur, s.savedAt = cur, time.Now()
			s.w.log.Info().Str("cursor", s.key).Int64("usn", cur.USN).Msg("resuming the uSNChanged poll")
			return nil
		}
	}
	return s.fullSync(ctx, c, dse, id)
}

// loadCursor loads the watermark. With several DCs each keeps its own
// (its USNs are its own): back on a DC, the poll resumes from its
// watermark instead of a full sync. A domain's first multi-DC start finds
// the one-DC cursor, which is used when it is this DC's.
func (s *usnPoll) loadCursor(ctx context.Context, dse rootDSE) ([]byte, error) {
	legacy := s.w.cfg.cursorKey(ModeUSN)
	keys := []string{legacy}
	if len(s.w.cfg.URLs) > 1 || s.w.cfg.Locate != nil {
		s.key = legacy + "." + kvSafe(dse.DNSHostName)
		keys = []string{s.key, legacy}
	}
	for _, k := range keys {
		raw, err := s.w.cursors.Load(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("loading cursor %s: %w", k, err)
		}
		if raw != nil {
			return raw, nil
		}
	}
	return nil, nil
}

// identify reads the rootDSE and the DC's invocationId. An invocationId the
// bind account cannot read is warned about once and left empty: the cursor
// then rests on the host name alone.
func (s *usnPoll) identify(c *ldap.Conn) (rootDSE, string, error) {
	dse, err := readRootDSE(c)
	if err != nil {
		return dse, "", err
	}
	id, err := readInvocationID(c, dse.DSServiceName)
	var le *ldap.Error
	switch {
	case err == nil:
		s.noInvocationID = false
	case errors.As(err, &le) && le.ResultCode == ldap.ErrorNetwork:
		return dse, "", err
	case !s.noInvocationID:
		s.noInvocationID = true
		s.w.log.Warn().Err(err).Str("dc", dse.DNSHostName).
			Msg("cannot read the DC's invocationId: a DC restored from a backup would not be noticed in usn mode (grant read on its NTDS Settings object)")
	}
	return dse, id, nil
}

// rolledBack reports whether the DC's USNs no longer continue the cursor's
// (same host): a new invocationId (restored from a backup), or a
// highestCommittedUSN below the watermark (rolled back without one, as an
// unsupported VM snapshot restore does).
func (s *usnPoll) rolledBack(cur usnCursor, dse rootDSE, id string) bool {
	return cur.InvocationID != "" && id != "" && !strings.EqualFold(cur.InvocationID, id) ||
		dse.HighestCommittedUSN < cur.USN
}

// dcRestored warns and audits that the watermark no longer holds and a full
// sync follows. An audit that cannot be written ends the session: the next
// one finds the same cursor and tries again before anything else.
func (s *usnPoll) dcRestored(ctx context.Context, cur usnCursor, dse rootDSE, id string) error {
	reason := "invocation_id_changed"
	if strings.EqualFold(cur.InvocationID, id) || cur.InvocationID == "" || id == "" {
		reason = "usn_rolled_back"
	}
	s.w.log.Warn().Str("cursor", s.key).Str("dc", dse.DNSHostName).Str("reason", reason).
		Str("cursor_invocation_id", cur.InvocationID).Str("invocation_id", id).
		Int64("cursor_usn", cur.USN).Int64("highest_committed_usn", dse.HighestCommittedUSN).
		Msg("the DC was restored from a backup or its USNs rolled back: the uSNChanged watermark no longer holds; running a full sync")
	detail := fmt.Sprintf("domain %s, DC %s: %s (invocationId %s -> %s, watermark USN %d, highestCommittedUSN %d); full resync",
		s.w.cfg.Domain, dse.DNSHostName, reason, orNone(cur.InvocationID), orNone(id), cur.USN, dse.HighestCommittedUSN)
	return s.w.audit(ctx, events.AuditRecord{Kind: auditKind, Action: "usn_full_resync", Outcome: reason, Detail: detail,
		EventID: fmt.Sprintf("adwatch.%s.%s.%d", s.key, id, cur.USN)})
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// fullSync publishes every user (FullSync=true), then moves the watermark to
// the USN read before the scan, so that nothing changed during it is lost.
func (s *usnPoll) fullSync(ctx context.Context, c *ldap.Conn, dse rootDSE, id string) error {
	start := time.Now()
	n, err := s.w.scanAll(ctx, c, true)
	if err != nil {
		return fmt.Errorf("full sync: %w", err)
	}
	if err := s.save(ctx, usnCursor{DC: dse.DNSHostName, InvocationID: id, USN: dse.HighestCommittedUSN}, true); err != nil {
		return err
	}
	s.w.log.Info().Int("users", n).Int64("usn", dse.HighestCommittedUSN).Dur("took", time.Since(start)).Msg("full sync done")
	return nil
}

// poll publishes what changed since the watermark. Deletions are searched on
// every poll: one watermark covers both searches.
func (s *usnPoll) poll(ctx context.Context, c *ldap.Conn, _ bool) error {
	dse, id, err := s.identify(c)
	if err != nil {
		return err
	}
	switch {
	case !strings.EqualFold(dse.DNSHostName, s.cur.DC):
		s.w.log.Warn().Str("was_dc", s.cur.DC).Str("dc", dse.DNSHostName).Msg("now talking to another DC; running a full sync")
		return s.fullSync(ctx, c, dse, id)
	case s.rolledBack(s.cur, dse, id):
		if err := s.dcRestored(ctx, s.cur, dse, id); err != nil {
			return err
		}
		return s.fullSync(ctx, c, dse, id)
	}
	if dse.HighestCommittedUSN <= s.cur.USN {
		return nil
	}
	// Read the watermark first: whatever commits during the scans is at most
	// published twice (same event ID), never skipped.
	// Deletions first: then the last thing before saving the cursor is a
	// publish, and a shutdown right after it still records the progress.
	since := strconv.FormatInt(s.cur.USN+1, 10)
	d, err := s.publishDeleted(ctx, c, since)
	if err != nil {
		return err
	}
	n, err := s.w.scan(ctx, c, "(&"+s.w.cfg.UserFilter+"(uSNChanged>="+since+"))", false)
	if err != nil {
		return err
	}
	if id == "" { // unreadable now: keep the one the cursor has
		id = s.cur.InvocationID
	}
	if err := s.save(ctx, usnCursor{DC: dse.DNSHostName, InvocationID: id, USN: dse.HighestCommittedUSN}, n+d > 0); err != nil {
		return err
	}
	if n+d > 0 {
		s.w.log.Info().Int("users", n).Int("deleted", d).Int64("usn", dse.HighestCommittedUSN).Msg("published AD changes")
	}
	return nil
}

// publishDeleted publishes users deleted since the watermark: their tombstones
// keep objectClass, objectGUID, sAMAccountName and lastKnownParent.
func (s *usnPoll) publishDeleted(ctx context.Context, c *ldap.Conn, since string) (int, error) {
	filter := "(&(isDeleted=TRUE)(objectClass=user)(!(objectClass=computer))(uSNChanged>=" + since + "))"
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(s.ncRoot, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, filter, []string{"objectGUID", "sAMAccountName", "uSNChanged", "lastKnownParent"},
		[]ldap.Control{ldap.NewControlMicrosoftShowDeleted()}), uint32(s.w.cfg.PageSize))
	if err != nil {
		return 0, fmt.Errorf("searching deleted users since USN %s: %w", since, err)
	}
	var users []events.ADUser
	for _, e := range res.Entries {
		if !s.inScope(e.GetAttributeValue("lastKnownParent")) {
			continue
		}
		u, err := s.w.deletedUser(e.GetRawAttributeValue("objectGUID"), e.DN)
		if err != nil {
			s.w.log.Warn().Err(err).Str("dn", e.DN).Msg("skipping deleted user")
			continue
		}
		u.SAMAccountName = e.GetAttributeValue("sAMAccountName")
		if u.USNChanged, err = strconv.ParseInt(e.GetAttributeValue("uSNChanged"), 10, 64); err != nil {
			s.w.log.Warn().Err(err).Str("dn", e.DN).Msg("tombstone without a valid uSNChanged")
		}
		users = append(users, u)
	}
	for batch := range slices.Chunk(users, s.w.cfg.PageSize) {
		if err := s.w.publish(ctx, batch); err != nil {
			return 0, err
		}
	}
	return len(users), nil
}

// inScope reports whether a deleted user lived below BaseDN. When its parent
// was deleted too (a subtree delete), the old place is unknown: reported.
func (s *usnPoll) inScope(lastKnownParent string) bool {
	if strings.EqualFold(s.ncRoot, s.w.cfg.BaseDN) || lastKnownParent == "" {
		return true
	}
	if _, dn, ok := strings.Cut(lastKnownParent, ">;"); ok { // extended form <GUID=...>;DN
		lastKnownParent = dn
	}
	parent, err1 := ldap.ParseDN(lastKnownParent)
	base, err2 := ldap.ParseDN(s.w.cfg.BaseDN)
	if err1 != nil || err2 != nil || strings.Contains(lastKnownParent, `\0ADEL:`) {
		return true
	}
	return base.EqualFold(parent) || base.AncestorOfFold(parent)
}

// save moves the watermark; it is stored when something was published up to
// it, or when the stored one has grown old (the USN also moves with changes
// that are not users').
func (s *usnPoll) save(ctx context.Context, cur usnCursor, published bool) error {
	if !published && time.Since(s.savedAt) < cookieSaveEvery {
		s.cur = cur
		return nil
	}
	raw, err := json.Marshal(cur)
	if err != nil {
		return fmt.Errorf("encoding cursor %s: %w", s.key, err)
	}
	if err := s.w.saveCursor(ctx, s.key, raw); err != nil {
		return err
	}
	s.cur, s.savedAt = cur, time.Now()
	return nil
}
