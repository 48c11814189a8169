// pwsync doctor's AD checks: bind and TLS, DirSync rights, PSO readability.

package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/ldapconn"
)

// --- AD ---

// LDAP result codes doctor explains.
const (
	ldapInvalidCredentials = 49
	ldapInsufficientAccess = 50
	ldapUnwilling          = 53
	ldapNoSuchObject       = 32
	ldapUnavailableCrit    = 12
)

func (d *doctor) checkDomain(ctx context.Context, key string, dom config.Domain) {
	name := "ad " + dom.Name
	if len(dom.DCs()) > 1 || dom.Discover != nil {
		// Several DCs: say which answer; the checks below run on the
		// first that does, the one pwsync would use.
		first, ok := d.checkDCs(ctx, key, dom)
		if !ok {
			return
		}
		dom.URL = first
	}
	u, err := url.Parse(dom.URL)
	if err != nil {
		d.add(checkResult{statusFail, name + " connect", err.Error(), key + ".url: use ldaps://dc.example.com:636"})
		return
	}
	// Checked even with insecure_skip_verify: doctor says whether the chain holds.
	tc, err := ldapconn.TLSConfig(dom.URL, dom.CAFile, false)
	if err != nil {
		d.add(checkResult{statusFail, name + " tls", err.Error(), key + ".ca_file: a PEM file with the CA that issued the DC's certificate"})
		return
	}
	// the keytab and a ticket first: they need the KDC, not the DC's LDAP
	krbOK := dom.Kerberos == nil || d.checkKerberos(key, name, dom)
	plain := u.Scheme == "ldap" && !dom.StartTLS
	c, err := ldapconn.Connect(ldapconn.Config{URL: dom.URL, StartTLS: dom.StartTLS, DialTimeout: d.timeout, RequestTimeout: d.timeout}, tc)
	switch {
	case err != nil && isCertError(err):
		d.add(checkResult{statusFail, name + " tls", "certificate not trusted: " + err.Error(),
			certFix(key, dom, u.Hostname())})
		if dom.InsecureSkipVerify {
			d.add(checkResult{statusWarn, name + " tls", "insecure_skip_verify is set: pwsync would connect, but the chain is not verified",
				"remove " + key + ".insecure_skip_verify once " + key + ".ca_file is right"})
		}
		return
	case err != nil:
		d.add(checkResult{statusFail, name + " connect", err.Error(),
			"check " + key + ".url (host, port 636 for ldaps, 389 for start_tls) and that the DC is reachable from here (firewall, DNS)"})
		return
	}
	defer c.Close()
	if plain {
		d.add(checkResult{statusWarn, name + " tls", "plain LDAP: the bind password and password events travel unencrypted",
			"use ldaps://...:636 or " + key + ".start_tls: true, with " + key + ".ca_file"})
	} else if st, ok := c.TLSConnectionState(); ok && len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		d.add(checkResult{Status: statusPass, Name: name + " tls", Detail: fmt.Sprintf("verified chain: %s issued by %s, valid until %s",
			leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format("2006-01-02"))})
	}

	switch {
	case dom.Kerberos != nil && !krbOK:
		d.add(checkResult{Status: statusSkip, Name: name + " bind", Detail: "no Kerberos ticket (see above)"})
		return
	case dom.Kerberos != nil:
		if !d.bindKerberos(c, key, name, dom) {
			return
		}
	default:
		if err := c.Bind(dom.BindDN, dom.BindPassword.Value()); err != nil {
			fix := "check " + key + ".bind_dn and " + key + ".bind_password (and that the account is enabled and its password not expired)"
			if ldapResult(err) != ldapInvalidCredentials {
				fix = "the DC refused the bind: " + fix
			}
			d.add(checkResult{statusFail, name + " bind", err.Error(), fix})
			return
		}
		d.add(checkResult{Status: statusPass, Name: name + " bind", Detail: "bound as " + dom.BindDN})
	}
	d.checkPSOs(c, name, dom)

	if dom.Mode == "usn" {
		d.add(checkResult{Status: statusSkip, Name: name + " dirsync", Detail: "mode usn: DirSync not used"})
		return
	}
	d.checkDirSync(c, key, name, dom)
}

// checkDirSync runs what the watcher's first poll runs (DirSync with object
// security, on the naming context), then the same without object security,
// which the DC grants only with "Replicating Directory Changes".
func (d *doctor) checkDirSync(c *ldap.Conn, key, name string, dom config.Domain) {
	const objectSecurity = 0x1
	req := func() *ldap.SearchRequest {
		// Matches nothing, through an index: the cheapest DirSync there is.
		return ldap.NewSearchRequest(dom.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(objectGUID=\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00)", []string{"objectGUID"}, nil)
	}
	grant := fmt.Sprintf("grant %s \"Replicating Directory Changes\" on %s (AD Users and Computers > domain > Properties > Security, or: dsacl)", bindAccount(dom), dom.BaseDN)
	if _, err := c.DirSync(req(), objectSecurity, 0, nil); err != nil {
		var fix string
		switch ldapResult(err) {
		case ldapInsufficientAccess:
			fix = "the account may not run DirSync: " + grant
		case ldapUnwilling, ldapNoSuchObject:
			fix = key + ".base_dn must be the domain's naming context root (e.g. DC=corp,DC=example,DC=com); scope OUs with evaluator.scope.include_ous"
		case ldapUnavailableCrit:
			fix = "this server does not support DirSync: set " + key + ".mode: usn"
		default:
			fix = "see the LDAP error; " + key + ".mode: usn works without DirSync"
		}
		d.add(checkResult{statusFail, name + " dirsync", err.Error(), fix})
		return
	}
	d.add(checkResult{Status: statusPass, Name: name + " dirsync", Detail: "DirSync (object security) accepted at " + dom.BaseDN})
	_, err := c.DirSync(req(), 0, 0, nil)
	switch {
	case err == nil:
		d.add(checkResult{Status: statusPass, Name: name + " replicating changes", Detail: "the account holds Replicating Directory Changes"})
	case ldapResult(err) == ldapInsufficientAccess:
		d.add(checkResult{statusWarn, name + " replicating changes",
			"LDAP 50 insufficientAccessRights on DirSync without object security: the account lacks Replicating Directory Changes; pwsync still works but sees only objects and attributes the account may read",
			grant})
	default:
		d.add(checkResult{statusWarn, name + " replicating changes", "could not tell: " + err.Error(), grant})
	}
}

// checkPSOs compares the PSOs the bind account can read (the Password
// Settings Container, as the watcher reads it) with those that apply to
// someone (the msDS-PSOApplied back links of groups and users). By default
// AD lets only administrators read PSOs: pwsync then still has the DC's
// computed expiry, but cannot watch those PSOs' changes or compute expiry
// from them when the computed value is missing.
func (d *doctor) checkPSOs(c *ldap.Conn, name string, dom config.Domain) {
	nc := dom.BaseDN // the domain's naming context: a base_dn below it is reported by the dirsync check
	if root, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"defaultNamingContext"}, nil)); err == nil && len(root.Entries) == 1 {
		if v := root.Entries[0].GetAttributeValue("defaultNamingContext"); v != "" && strings.HasSuffix(strings.ToLower(dom.BaseDN), strings.ToLower(v)) {
			nc = v
		}
	}
	psc := "CN=Password Settings Container,CN=System," + nc
	readable := map[string]bool{}
	res, err := c.Search(ldap.NewSearchRequest(psc, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=msDS-PasswordSettings)", []string{"cn"}, nil))
	if err != nil && ldapResult(err) != ldapNoSuchObject {
		d.add(checkResult{statusWarn, name + " psos", "reading " + psc + ": " + err.Error(), psoGrant(dom, psc)})
		return
	}
	if res != nil {
		for _, e := range res.Entries {
			readable[strings.ToLower(e.DN)] = true
		}
	}
	applied, err := c.Search(ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 1000, int(d.timeout.Seconds()), false,
		"(msDS-PSOApplied=*)", []string{"msDS-PSOApplied"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		if len(readable) > 0 {
			d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: fmt.Sprintf("%d PSO(s) readable (which apply to whom not checked: %v)", len(readable), err)})
		} else {
			d.add(checkResult{statusWarn, name + " psos", "no PSO readable, and whether any applies could not be told: " + err.Error(), psoGrant(dom, psc)})
		}
		return
	}
	var missing []string
	seen := map[string]bool{}
	if applied != nil {
		for _, e := range applied.Entries {
			for _, p := range e.GetAttributeValues("msDS-PSOApplied") {
				if k := strings.ToLower(p); !readable[k] && !seen[k] {
					seen[k] = true
					missing = append(missing, p)
				}
			}
		}
	}
	switch {
	case len(missing) > 0:
		slices.Sort(missing)
		d.add(checkResult{statusWarn, name + " psos", fmt.Sprintf("%d PSO(s) apply to users or groups but %s cannot read them (e.g. %s): "+
			"pwsync uses the DC's computed expiry, but does not see those PSOs change and has no fallback expiry for their users",
			len(missing), bindAccount(dom), missing[0]), psoGrant(dom, psc)})
	case len(readable) > 0:
		d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: fmt.Sprintf("%d PSO(s) readable in %s", len(readable), psc)})
	default:
		d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: "no fine-grained password policy applies to anyone: the domain's maxPwdAge rules"})
	}
}

func psoGrant(dom config.Domain, psc string) string {
	return fmt.Sprintf("grant %s read on %s, inherited by its PSOs (AD Users and Computers > System > Password Settings Container > Properties > Security, or: dsacls \"%s\" /I:T /G \"<domain>\\<account>:GR\")",
		bindAccount(dom), psc, psc)
}

func ldapResult(err error) int {
	var le *ldap.Error
	if errors.As(err, &le) {
		return int(le.ResultCode)
	}
	return -1
}

func certFix(key string, dom config.Domain, host string) string {
	if dom.CAFile == "" {
		return "set " + key + ".ca_file to the PEM of the CA that issued the DC's certificate (or install it in the system trust store)"
	}
	return fmt.Sprintf("%s.ca_file (%s) must hold the CA that issued the DC's certificate, and the certificate must name %q (use the DC's FQDN in %s.url)",
		key, dom.CAFile, host, key)
}

// checkDCs lists the domain's DCs (named and discovered) and which answer
// (TCP and TLS); it returns the first that does.
func (d *doctor) checkDCs(ctx context.Context, key string, dom config.Domain) (string, bool) {
	name := "ad " + dom.Name + " dcs"
	l, err := domainLocator(dom)
	if err != nil {
		d.add(checkResult{statusFail, name, err.Error(), key + ": name a DC in url or urls, or set discover"})
		return "", false
	}
	urls, err := l.Candidates(ctx)
	if err != nil {
		d.add(checkResult{statusFail, name, err.Error(), "check " + key + ".discover (dns_domain, site, resolver) and that DNS has the DCs' SRV records (" + strings.Join(l.Names(), ", ") + ")"})
		return "", false
	}
	var states []string
	first := ""
	for _, x := range urls {
		tc, err := ldapconn.TLSConfig(x, dom.CAFile, dom.InsecureSkipVerify)
		if err == nil {
			var c *ldap.Conn
			if c, err = ldapconn.Connect(ldapconn.Config{URL: x, StartTLS: dom.StartTLS, DialTimeout: d.timeout, RequestTimeout: d.timeout}, tc); err == nil {
				c.Close()
			}
		}
		if err != nil {
			states = append(states, x+": does not answer ("+err.Error()+")")
			continue
		}
		states = append(states, x+": answers")
		if first == "" {
			first = x
		}
	}
	detail := fmt.Sprintf("%d found, in the order pwsync tries them: %s", len(urls), strings.Join(states, "; "))
	switch {
	case first == "":
		d.add(checkResult{statusFail, name, detail, "no DC of " + dom.Name + " answers from here: check the firewall (636 for ldaps, 389 for start_tls) and DNS"})
		return "", false
	case first != urls[0]:
		d.add(checkResult{statusWarn, name, detail, "the preferred DC " + urls[0] + " does not answer: pwsync runs on " + first + " meanwhile"})
	default:
		d.add(checkResult{Status: statusPass, Name: name, Detail: detail})
	}
	return first, true
}
