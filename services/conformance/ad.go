package conformance

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/services/ingest/adwatch"
)

// zeroGUIDFilter matches no object, through the objectGUID index: a
// DirSync with it answers at once with a cookie for "now", as the
// watcher's first poll does.
const zeroGUIDFilter = `(&(objectClass=user)(objectGUID=\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00))`

// adRun holds what one domain's checks learn from each other.
type adRun struct {
	*runner
	cfg    adwatch.Config
	prefix string // "ad <domain> "
	c      *ldap.Conn
	nc     string // defaultNamingContext
	cookie []byte // DirSync cookie of "now", for the write check
	user   *ldap.Entry
	isTest bool // user is the named test user (not just the first one found)

	pushMu sync.Mutex
	pushes map[string]time.Time // lower-cased DN -> last change notification
}

func (r *runner) domain(ctx context.Context, d Domain) {
	cfg := d.Config
	if cfg.Mode == "" {
		cfg.Mode = adwatch.ModeDirSync
	}
	ar := &adRun{runner: r, cfg: cfg, prefix: "ad " + cfg.Domain + " ", pushes: map[string]time.Time{}}
	if !ar.bind() {
		return
	}
	defer ar.c.Close()
	ar.rootDSE()
	ar.dirSync()
	stop := ar.notification(ctx)
	defer stop()
	ar.findUser()
	ar.attributes()
	ar.expirySource()
	ar.pwdLastSetRight()
	ar.pwdLastSetWrite(ctx)
}

func (ar *adRun) bind() bool {
	c, err := adwatch.Dial(ar.cfg)
	if err != nil {
		ar.fail(ar.prefix+"bind", err.Error(), "the watcher's dial: TLS as configured, then a simple bind as bind_dn")
		return false
	}
	ar.c = c
	ar.pass(ar.prefix+"bind", "bound to "+ar.cfg.URL+" as "+ar.cfg.BindDN)
	return true
}

// rootDSE checks what the watcher relies on: the controls, the naming
// context DirSync needs as its base, and dsServiceName (the DC's
// invocationId keys the USN cursor).
func (ar *adRun) rootDSE() {
	name := ar.prefix + "rootdse"
	res, err := ar.c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"supportedControl", "defaultNamingContext", "namingContexts", "dsServiceName", "highestCommittedUSN"}, nil))
	want := "rootDSE lists DirSync (1.2.840.113556.1.4.841) and change notification (1.2.840.113556.1.4.528) in supportedControl, defaultNamingContext, dsServiceName and highestCommittedUSN; base_dn is a naming context root"
	if err != nil || len(res.Entries) != 1 {
		ar.fail(name, fmt.Sprintf("reading the rootDSE: %v", err), want)
		return
	}
	e := res.Entries[0]
	ar.nc = e.GetAttributeValue("defaultNamingContext")
	ctrls := e.GetAttributeValues("supportedControl")
	dirsync := slices.Contains(ctrls, ldap.ControlTypeDirSync)
	notify := slices.Contains(ctrls, ldap.ControlTypeMicrosoftNotification)
	isNC := slices.ContainsFunc(e.GetAttributeValues("namingContexts"), func(nc string) bool { return strings.EqualFold(nc, ar.cfg.BaseDN) })
	seen := fmt.Sprintf("defaultNamingContext=%s dsServiceName=%s highestCommittedUSN=%s dirsync=%t notification=%t base_dn is a naming context=%t",
		ar.nc, e.GetAttributeValue("dsServiceName"), e.GetAttributeValue("highestCommittedUSN"), dirsync, notify, isNC)
	var problems []string
	if ar.nc == "" || e.GetAttributeValue("dsServiceName") == "" || e.GetAttributeValue("highestCommittedUSN") == "" {
		problems = append(problems, "attributes missing")
	}
	if ar.cfg.Mode != adwatch.ModeUSN && (!dirsync || !isNC) {
		problems = append(problems, "mode "+ar.cfg.Mode+" needs DirSync at a naming context root")
	}
	if ar.cfg.Notifications && !notify {
		problems = append(problems, "notifications are on but the control is not supported")
	}
	if len(problems) > 0 {
		ar.fail(name, seen+": "+strings.Join(problems, "; "), want)
		return
	}
	ar.pass(name, seen)
}

// dirSync runs the watcher's first DirSync: object security, at base_dn.
func (ar *adRun) dirSync() {
	name := ar.prefix + "dirsync"
	if ar.cfg.Mode == adwatch.ModeUSN {
		ar.skip(name, "mode usn: DirSync not used")
		return
	}
	want := "DirSync with object security (flag 0x1) at base_dn answers with a cookie: no 'Replicating Directory Changes' needed"
	req := ldap.NewSearchRequest(ar.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		zeroGUIDFilter, adwatch.DirSyncAttributes(), nil)
	res, err := ar.c.DirSync(req, adwatch.DirSyncObjectSecurity, 0, nil)
	if err != nil {
		ar.fail(name, err.Error(), want)
		return
	}
	ctrl, _ := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync)
	if ctrl == nil || len(ctrl.Cookie) == 0 {
		ar.fail(name, "answer without a DirSync cookie", want)
		return
	}
	ar.cookie = ctrl.Cookie
	// Without object security the DC demands Replicating Directory
	// Changes; pwsync does not need it, it only widens what is seen.
	rights := "the account also holds Replicating Directory Changes"
	req2 := ldap.NewSearchRequest(ar.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		zeroGUIDFilter, []string{"objectGUID"}, nil)
	if _, err := ar.c.DirSync(req2, 0, 0, nil); err != nil {
		rights = "without object security: " + err.Error() + " (not needed)"
	}
	ar.pass(name, fmt.Sprintf("cookie of %d bytes; %s", len(ar.cookie), rights))
}

// notification opens the watcher's change-notification search on a
// connection of its own and keeps it open, recording pushes, until the
// returned stop is called.
func (ar *adRun) notification(ctx context.Context) (stop func()) {
	name := ar.prefix + "notification"
	if !ar.cfg.Notifications {
		ar.skip(name, "notifications are off for this domain")
		return func() {}
	}
	want := "a search with the notification control (1.2.840.113556.1.4.528), filter (objectClass=*), at the naming context, stays open"
	base := ar.nc
	if base == "" {
		base = ar.cfg.BaseDN
	}
	c, err := adwatch.Dial(ar.cfg)
	if err != nil {
		ar.fail(name, err.Error(), want)
		return func() {}
	}
	c.SetTimeout(0)
	ctx, cancel := context.WithCancel(ctx)
	res := c.SearchAsync(ctx, adwatch.NotificationRequest(base), 64)
	done := make(chan error, 1)
	go func() {
		for res.Next() {
			if e := res.Entry(); e != nil {
				ar.pushMu.Lock()
				ar.pushes[strings.ToLower(e.DN)] = time.Now()
				ar.pushMu.Unlock()
			}
		}
		done <- res.Err()
	}()
	stop = func() {
		cancel()
		c.Close()
		<-done
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		done <- err // for stop
		ar.fail(name, fmt.Sprintf("the search ended at once: %v", err), want)
	case <-t.C:
		ar.pass(name, "open at "+base)
	}
	return stop
}

// pushedSince reports whether dn was pushed at or after t.
func (ar *adRun) pushedSince(dn string, t time.Time) bool {
	ar.pushMu.Lock()
	defer ar.pushMu.Unlock()
	at, ok := ar.pushes[strings.ToLower(dn)]
	return ok && !at.Before(t)
}

// findUser reads the AD test user (or, without one, the first user in
// scope, read only) with the watcher's attributes.
func (ar *adRun) findUser() {
	name := ar.prefix + "test user"
	filter := orDefault(ar.cfg.UserFilter, adwatch.DefaultUserFilter)
	limit := 1
	if n := ar.opts.TestADUser; n != "" {
		esc := ldap.EscapeFilter(n)
		filter = fmt.Sprintf("(&%s(|(sAMAccountName=%s)(userPrincipalName=%s)))", adwatch.DefaultUserFilter, esc, esc)
		limit = 2
	}
	res, err := ar.c.Search(ldap.NewSearchRequest(ar.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, limit, 0, false,
		filter, adwatch.UserAttributes(), nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		ar.fail(name, err.Error(), "the user is found under base_dn")
		return
	}
	switch {
	case ar.opts.TestADUser == "" && res != nil && len(res.Entries) > 0:
		ar.user = res.Entries[0]
		ar.skip(name, "no test user (--test-ad-user NAME): attributes read on "+ar.user.DN)
	case ar.opts.TestADUser == "":
		ar.skip(name, "no test user (--test-ad-user NAME) and no user under base_dn")
	case res == nil || len(res.Entries) != 1:
		n := 0
		if res != nil {
			n = len(res.Entries)
		}
		ar.fail(name, fmt.Sprintf("%d users named %s under %s", n, ar.opts.TestADUser, ar.cfg.BaseDN), "exactly one user with that sAMAccountName or userPrincipalName")
	default:
		ar.user, ar.isTest = res.Entries[0], true
		ar.adTestUser = ar.user.DN
		ar.adImmutableID = adwatch.ImmutableID(ar.cfg, ar.user)
		ar.pass(name, fmt.Sprintf("%s, immutable id %s", ar.user.DN, ar.adImmutableID))
	}
}

// readState reads the password state of dn as the watcher reads it.
func readState(c *ldap.Conn, dn string) (adState, *ldap.Entry, error) {
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", adwatch.UserAttributes(), nil))
	if err != nil {
		return adState{}, nil, err
	}
	if len(res.Entries) != 1 {
		return adState{}, nil, fmt.Errorf("%d entries", len(res.Entries))
	}
	e := res.Entries[0]
	return stateOf(e), e, nil
}

func stateOf(e *ldap.Entry) adState {
	num := func(a string) int64 {
		v, _ := strconv.ParseInt(e.GetAttributeValue(a), 10, 64)
		return v
	}
	return adState{PwdLastSet: num("pwdLastSet"), UAC: num("userAccountControl"),
		UACComputed: num("msDS-User-Account-Control-Computed"), Expiry: num("msDS-UserPasswordExpiryTimeComputed"),
		HasComputed: len(e.GetAttributeValues("msDS-User-Account-Control-Computed")) > 0 &&
			len(e.GetAttributeValues("msDS-UserPasswordExpiryTimeComputed")) > 0}
}

// attributes judges the entry: the attributes pwsync requires, and the
// constructed ones agreeing with pwdLastSet and userAccountControl.
func (ar *adRun) attributes() {
	name := ar.prefix + "attributes"
	if ar.user == nil {
		ar.skip(name, "no user to read")
		return
	}
	want := "objectGUID, pwdLastSet, userAccountControl, uSNChanged returned; msDS-UserPasswordExpiryTimeComputed and msDS-User-Account-Control-Computed computed as MS-ADTS says (must change = pwdLastSet 0 without DONT_EXPIRE_PASSWD: expiry 0 and UF_PASSWORD_EXPIRED)"
	var missing []string
	for _, a := range []string{"objectGUID", "pwdLastSet", "userAccountControl", "uSNChanged"} {
		if len(ar.user.GetRawAttributeValues(a)) == 0 {
			missing = append(missing, a)
		}
	}
	s := stateOf(ar.user)
	seen := fmt.Sprintf("%s: pwdLastSet=%d userAccountControl=%#x msDS-User-Account-Control-Computed=%#x msDS-UserPasswordExpiryTimeComputed=%s msDS-ResultantPSO=%q",
		ar.user.DN, s.PwdLastSet, s.UAC, s.UACComputed, fileTimeString(s.Expiry), ar.user.GetAttributeValue("msDS-ResultantPSO"))
	problems := judgeADState(s, time.Now())
	if len(missing) > 0 {
		problems = append(problems, "not returned: "+strings.Join(missing, ", "))
	}
	if len(problems) > 0 {
		ar.fail(name, seen+"; "+strings.Join(problems, "; "), want)
		return
	}
	ar.pass(name, seen)
}

// expirySource checks the computed expiry against the policy that applies:
// msDS-ResultantPSO's maximum age, else the domain's maxPwdAge.
func (ar *adRun) expirySource() {
	name := ar.prefix + "expiry source"
	if ar.user == nil {
		ar.skip(name, "no user to read")
		return
	}
	s := stateOf(ar.user)
	if s.UAC&uacExpiryNever != 0 || s.PwdLastSet == 0 {
		ar.skip(name, fmt.Sprintf("%s: expiry never or must change: no maximum age applies", ar.user.DN))
		return
	}
	dn, attr, source := ar.nc, "maxPwdAge", "the domain"
	if pso := ar.user.GetAttributeValue("msDS-ResultantPSO"); pso != "" {
		dn, attr, source = pso, "msDS-MaximumPasswordAge", "PSO "+pso
	}
	want := "msDS-UserPasswordExpiryTimeComputed = pwdLastSet + the maximum age of msDS-ResultantPSO, else of the domain (what pwsync computes when the constructed value is missing)"
	res, err := ar.c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue(attr) == "" {
		// By default only administrators may read PSOs: pwsync then uses
		// the DC's computed expiry only (doctor's psos check warns).
		ar.skip(name, fmt.Sprintf("%s of %s not readable by %s (%v): pwsync has no fallback expiry for this user", attr, source, ar.cfg.BindDN, err))
		return
	}
	maxAge, err := strconv.ParseInt(res.Entries[0].GetAttributeValue(attr), 10, 64)
	if err != nil {
		ar.fail(name, fmt.Sprintf("%s of %s: %v", attr, source, err), want)
		return
	}
	seen := fmt.Sprintf("%s: pwdLastSet %s + %s's %s", ar.user.DN, fileTimeString(s.PwdLastSet), source, attr)
	if maxAgeNever(maxAge) {
		seen += " (never)"
	} else {
		seen += fmt.Sprintf(" (%s)", time.Duration(-maxAge*100))
	}
	seen += " = " + fileTimeString(s.Expiry)
	if problems := judgeExpirySource(s, maxAge, source); len(problems) > 0 {
		ar.fail(name, seen+"; "+strings.Join(problems, "; "), want)
		return
	}
	ar.pass(name, seen)
}

// pwdLastSetRight asks the DC, read-only, whether the bind account may
// write pwdLastSet on the test user (what campaigns write).
func (ar *adRun) pwdLastSetRight() {
	name := ar.prefix + "pwdlastset right"
	if !ar.isTest {
		ar.skip(name, "no test user (--test-ad-user NAME)")
		return
	}
	want := "allowedAttributesEffective of the test user holds pwdLastSet: campaigns write pwdLastSet=0 (\"Reset password\" delegation, or \"Write pwdLastSet\")"
	res, err := ar.c.Search(ldap.NewSearchRequest(ar.user.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"allowedAttributesEffective"}, nil))
	if err != nil || len(res.Entries) != 1 {
		ar.fail(name, fmt.Sprintf("reading allowedAttributesEffective: %v", err), want)
		return
	}
	attrs := res.Entries[0].GetAttributeValues("allowedAttributesEffective")
	if !slices.ContainsFunc(attrs, func(a string) bool { return strings.EqualFold(a, "pwdLastSet") }) {
		ar.fail(name, fmt.Sprintf("%d writable attributes, pwdLastSet not among them", len(attrs)), want)
		return
	}
	ar.pass(name, fmt.Sprintf("pwdLastSet among the %d attributes %s may write on %s", len(attrs), ar.cfg.BindDN, ar.user.DN))
}

// pwdLastSetWrite does what a campaign does to a synced user (pwdLastSet=0,
// through the campaign's own LDAP writer), checks that the DC computes
// "must change", that the watcher's DirSync and the change notification
// report it, then undoes it.
func (ar *adRun) pwdLastSetWrite(ctx context.Context) {
	name := ar.prefix + "pwdlastset write"
	if !ar.opts.Write || !ar.isTest {
		ar.skip(name, "needs --write and --test-ad-user")
		return
	}
	want := "pwdLastSet=0 written; the DC then computes must change (expiry 0, UF_PASSWORD_EXPIRED); the undo (-1) is accepted"
	dn := ar.user.DN
	before := stateOf(ar.user)
	w, err := campaign.NewLDAP(campaign.LDAPConfig{URL: ar.cfg.URL, StartTLS: ar.cfg.StartTLS, CAFile: ar.cfg.CAFile,
		InsecureSkipVerify: ar.cfg.InsecureSkipVerify, BindDN: ar.cfg.BindDN, BindPassword: ar.cfg.BindPassword, Conns: 1})
	if err != nil {
		ar.fail(name, err.Error(), want)
		return
	}
	defer w.Close()
	t0 := time.Now()
	if _, err := w.ForceChange(ctx, dn); err != nil {
		ar.fail(name, "modify pwdLastSet=0: "+err.Error(), want)
		return
	}
	defer func() {
		if before.PwdLastSet == 0 {
			return // it was 0 already
		}
		// AD takes only 0 and -1: -1 makes the password current as of
		// now; the original time cannot be written back.
		req := ldap.NewModifyRequest(dn, nil)
		req.Replace("pwdLastSet", []string{"-1"})
		if err := ar.c.Modify(req); err != nil {
			ar.fail(name+" undo", "modify pwdLastSet=-1: "+err.Error(), "the test user's pwdLastSet restored (-1)")
		}
	}()
	v, err := w.PwdLastSet(ctx, dn)
	s, _, rerr := readState(ar.c, dn)
	switch {
	case err != nil || rerr != nil:
		ar.fail(name, fmt.Sprintf("read-back: %v %v", err, rerr), want)
		return
	case v != 0:
		ar.fail(name, fmt.Sprintf("read-back pwdLastSet=%d", v), want)
		return
	}
	if problems := judgeADState(s, time.Now()); len(problems) > 0 {
		ar.fail(name, "pwdLastSet=0; "+strings.Join(problems, "; "), want)
	} else {
		ar.pass(name, fmt.Sprintf("pwdLastSet=0 read back; computed expiry %s, UF_PASSWORD_EXPIRED=%t; undone with -1 (a fresh time: AD accepts only 0 and -1)",
			fileTimeString(s.Expiry), s.UACComputed&0x800000 != 0))
	}
	ar.dirSyncDelta(ctx, dn)
	ar.notificationPush(ctx, dn, t0)
}

// dirSyncDelta follows the cookie of "now" with the watcher's users stream:
// the write must come back as the user's objectGUID with pwdLastSet 0.
func (ar *adRun) dirSyncDelta(ctx context.Context, dn string) {
	name := ar.prefix + "dirsync delta"
	if ar.cookie == nil {
		ar.skip(name, "no DirSync cookie")
		return
	}
	want := "the next DirSync (object security, the watcher's filter and attributes) returns the user with pwdLastSet 0"
	guid := ar.user.GetRawAttributeValue("objectGUID")
	var seen string
	ok, err := poll(ctx, ar.opts.Wait, func() (bool, error) {
		req := ldap.NewSearchRequest(ar.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			adwatch.DirSyncFilter(), adwatch.DirSyncAttributes(), nil)
		res, err := ar.c.DirSync(req, adwatch.DirSyncObjectSecurity, 0, ar.cookie)
		if err != nil {
			return false, err
		}
		if ctrl, _ := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync); ctrl != nil && len(ctrl.Cookie) > 0 {
			ar.cookie = ctrl.Cookie
		}
		for _, e := range res.Entries {
			if string(e.GetRawAttributeValue("objectGUID")) != string(guid) {
				continue
			}
			seen = fmt.Sprintf("entry %s with pwdLastSet=%v", e.DN, e.GetAttributeValues("pwdLastSet"))
			if slices.Contains(e.GetAttributeValues("pwdLastSet"), "0") {
				return true, nil
			}
		}
		return false, nil
	})
	switch {
	case err != nil:
		ar.fail(name, err.Error(), want)
	case !ok:
		ar.fail(name, fmt.Sprintf("not within %s (last: %s)", ar.opts.Wait, orDefault(seen, "user not returned")), want)
	default:
		ar.pass(name, seen)
	}
}

func (ar *adRun) notificationPush(ctx context.Context, dn string, since time.Time) {
	name := ar.prefix + "notification push"
	if !ar.cfg.Notifications {
		ar.skip(name, "notifications are off for this domain")
		return
	}
	ok, err := poll(ctx, ar.opts.Wait, func() (bool, error) { return ar.pushedSince(dn, since), nil })
	switch {
	case err != nil:
		ar.fail(name, err.Error(), "")
	case !ok:
		ar.fail(name, fmt.Sprintf("no push for %s within %s", dn, ar.opts.Wait), "the DC pushes the changed entry on the open notification search")
	default:
		ar.pass(name, "pushed "+dn)
	}
}
