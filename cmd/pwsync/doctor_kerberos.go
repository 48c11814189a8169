// pwsync doctor's Kerberos checks: the keytab, a ticket from the KDC, the
// GSSAPI bind.

package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/ldapconn"
)

// checkKerberos checks the keytab and gets a TGT (kinit -k) before the DC
// is contacted; it reports whether a bind is worth trying.
func (d *doctor) checkKerberos(key, name string, dom config.Domain) bool {
	k := ldapKerberos(dom.Kerberos)
	kkey := key + ".kerberos"
	info, err := ldapconn.InspectKeytab(*k)
	if err != nil {
		d.add(checkResult{statusFail, name + " kerberos keytab", err.Error(), krbFix(kkey, *k, err)})
		return false
	}
	detail := fmt.Sprintf("%s holds %s, key version %d: %s", k.KeytabFile, info.Principal, info.KVNO, strings.Join(info.EncTypes, ", "))
	if info.Weak {
		d.add(checkResult{statusWarn, name + " kerberos keytab", detail + " (RC4/DES only: AD may refuse them)",
			"export an AES keytab (ktpass ... -crypto AES256-SHA1; on the account: \"This account supports Kerberos AES 256 bit encryption\")"})
	} else {
		d.add(checkResult{Status: statusPass, Name: name + " kerberos keytab", Detail: detail})
	}
	tkt, err := ldapconn.Kinit(*k)
	if err != nil {
		d.add(checkResult{statusFail, name + " kerberos ticket", err.Error(), krbFix(kkey, *k, err)})
		return false
	}
	renew := "not renewable: pwsync logs in again from the keytab before it ends"
	if !tkt.RenewTill.IsZero() {
		renew = "renewable until " + tkt.RenewTill.Local().Format(time.DateTime)
	}
	d.add(checkResult{Status: statusPass, Name: name + " kerberos ticket", Detail: fmt.Sprintf("TGT for %s (%s), valid until %s, %s",
		tkt.Principal, tkt.KDCEType, tkt.EndTime.Local().Format(time.DateTime), renew)})
	return true
}

// bindKerberos binds c with Kerberos as the domain says.
func (d *doctor) bindKerberos(c *ldap.Conn, key, name string, dom config.Domain) bool {
	cfg := ldapconn.Config{URL: dom.URL, StartTLS: dom.StartTLS, Kerberos: ldapKerberos(dom.Kerberos)}
	spn, err := ldapconn.KerberosSPN(c, cfg)
	if err == nil {
		err = ldapconn.Bind(c, cfg)
	}
	if err != nil {
		d.add(checkResult{statusFail, name + " bind", err.Error(), krbFix(key+".kerberos", *cfg.Kerberos, err)})
		return false
	}
	d.add(checkResult{Status: statusPass, Name: name + " bind", Detail: fmt.Sprintf("bound with Kerberos as %s (SPN %s)", cfg.Kerberos.Name(), spn)})
	return true
}

// krbFix says what to change for a Kerberos failure.
func krbFix(key string, k ldapconn.Kerberos, err error) string {
	export := fmt.Sprintf("export it again: ktpass -princ %s -mapuser <DOMAIN\\account> -crypto AES256-SHA1 -ptype KRB5_NT_PRINCIPAL -pass * -out <file> "+
		"(Windows), or samba-tool domain exportkeytab <file> --principal=%s (Samba)", k.Name(), k.Name())
	switch {
	case errors.Is(err, ldapconn.ErrNotInKeytab):
		return fmt.Sprintf("%s.principal must name the keytab's principal exactly (klist -k %s), or %s", key, k.KeytabFile, export)
	case errors.Is(err, ldapconn.ErrKeytab):
		return fmt.Sprintf("%s.keytab_file must be a keytab pwsync can read (owner pwsync, mode 600); %s", key, export)
	case errors.Is(err, ldapconn.ErrKerberosConfig):
		return fmt.Sprintf("check %s.realm, %s.principal and %s.krb5_conf", key, key, key)
	case errors.Is(err, ldapconn.ErrPrincipalUnknown):
		return fmt.Sprintf("the KDC knows no %s: %s.principal is the account's sAMAccountName (or user@REALM), %s.realm the domain's realm in upper case", k.Name(), key, key)
	case errors.Is(err, ldapconn.ErrKeyRejected):
		return "the keytab's key is not the account's current one (its password changed since the export): " + export
	case errors.Is(err, ldapconn.ErrKDCUnreachable):
		return fmt.Sprintf("set %s.kdcs (or the realm's kdc in %s.krb5_conf, or DNS SRV _kerberos._tcp.<realm>) and open port 88 (TCP and UDP) to the DCs", key, key)
	case errors.Is(err, ldapconn.ErrClockSkew):
		return "sync this host's clock with the domain (NTP): Kerberos allows 5 minutes"
	case errors.Is(err, ldapconn.ErrSPNUnknown):
		return fmt.Sprintf("set %s.spn to an SPN of the DC's account (setspn -L <DC>; e.g. ldap/<DC FQDN>), or name the DC by its FQDN in the URL", key)
	case errors.Is(err, ldapconn.ErrAccountDisabled):
		return "enable or unlock the account; if its password expired, set a new one and " + strings.TrimPrefix(export, "export it again: ")
	case errors.Is(err, ldapconn.ErrEncType):
		return "the keytab and the account share no encryption type: allow AES on the account (msDS-SupportedEncryptionTypes) and " + export
	case ldapResult(err) == ldapStrongAuthRequired || strings.Contains(err.Error(), "80090346"):
		// pwsync's GSSAPI bind relies on TLS: no SASL signing, no TLS channel bindings
		return "the DC wants SASL signing or TLS channel bindings, which pwsync's Kerberos bind does not send: on Windows, LdapEnforceChannelBinding " +
			"must be 0 or 1 (\"when supported\", the default), not 2; on Samba set \"ldap server require strong auth = allow_sasl_without_tls_channel_bindings\" " +
			"(4.20 and later; \"allow_sasl_over_tls\" before)"
	}
	return "the DC refused the Kerberos bind: check that " + k.Name() + " may read the domain, and " + key + ".spn"
}

// ldapStrongAuthRequired is LDAP's strongerAuthRequired result.
const ldapStrongAuthRequired = 8

// bindAccount names the account pwsync binds as, for doctor's messages.
func bindAccount(dom config.Domain) string {
	if dom.Kerberos != nil {
		return ldapKerberos(dom.Kerberos).Name()
	}
	return dom.BindDN
}
