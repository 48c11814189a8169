package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Kerberos binds to a domain's DCs with Kerberos (SASL GSSAPI) and a
// keytab instead of bind_dn/bind_password: no password in the config.
type Kerberos struct {
	// Realm, e.g. EXAMPLE.COM; may instead be the principal's @REALM.
	Realm string `yaml:"realm"`
	// Principal is the service account: svc-pwsync or svc-pwsync@EXAMPLE.COM.
	Principal string `yaml:"principal"`
	// KeytabFile holds the account's keys (ktpass, samba-tool domain exportkeytab).
	KeytabFile string `yaml:"keytab_file"`
	// KRB5Conf is an optional krb5.conf (realms, KDCs, enctypes).
	KRB5Conf string `yaml:"krb5_conf"`
	// KDCs are host[:port]; empty: krb5_conf's, else DNS SRV _kerberos._tcp.<realm>.
	KDCs []string `yaml:"kdcs"`
	// SPN of the DCs' LDAP service; empty: ldap/<URL host>, or the rootDSE's
	// dnsHostName when the URL holds an IP address.
	SPN string `yaml:"spn"`
}

// validateBind checks how the domain binds: bind_dn and bind_password, or
// kerberos, never both.
func (d Domain) validateBind(key string) []error {
	var errs []error
	add := func(k, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, a...)...))
	}
	if d.Kerberos == nil {
		if d.BindDN == "" {
			add("bind_dn", "required (or kerberos)")
		}
		if !d.BindPassword.IsSet() {
			add("bind_password", "required (or kerberos)")
		}
		return errs
	}
	if d.BindDN != "" {
		add("bind_dn", "must be absent with kerberos: the Kerberos principal is the account")
	}
	if d.BindPassword.IsSet() {
		add("bind_password", "must be absent with kerberos: the keytab replaces the password")
	}
	// go-ldap's GSSAPI bind negotiates no SASL signing or sealing: TLS must
	// protect the session (and AD's LDAP signing policy demands one or the other)
	if d.plainLDAP() {
		add("kerberos", "needs ldaps:// or start_tls: true (pwsync's Kerberos bind relies on TLS, not SASL signing)")
	}
	return append(errs, d.Kerberos.validate(key+".kerberos")...)
}

// plainLDAP reports whether a DC would be reached without TLS.
func (d Domain) plainLDAP() bool {
	if d.StartTLS {
		return false
	}
	for _, x := range d.DCs() {
		if u, err := url.Parse(x); err == nil && u.Scheme == "ldap" {
			return true
		}
	}
	return d.Discover != nil && d.Discover.Scheme == "ldap"
}

func (k Kerberos) validate(key string) []error {
	var errs []error
	add := func(k, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{key, k}, a...)...))
	}
	user, realm, hasRealm := strings.Cut(k.Principal, "@")
	switch {
	case user == "":
		add("principal", "required (the service account, e.g. svc-pwsync)")
	case hasRealm && k.Realm != "" && realm != k.Realm:
		add("principal", "names realm %s, but kerberos.realm is %s", realm, k.Realm)
	case hasRealm && realm != strings.ToUpper(realm):
		add("principal", "%s: the realm after @ is upper case (%s@%s), a UPN suffix is not a realm", k.Principal, user, strings.ToUpper(realm))
	case !hasRealm && k.Realm == "" && k.KRB5Conf == "":
		add("realm", "required (e.g. EXAMPLE.COM), or principal@REALM, or a krb5_conf with default_realm")
	}
	if k.Realm != "" && k.Realm != strings.ToUpper(k.Realm) {
		add("realm", "%s: AD realms are upper case (%s)", k.Realm, strings.ToUpper(k.Realm))
	}
	if err := readable(k.KeytabFile); err != nil {
		add("keytab_file", "%v", err)
	}
	if k.KRB5Conf != "" {
		if err := readable(k.KRB5Conf); err != nil {
			add("krb5_conf", "%v", err)
		}
	}
	for i, h := range k.KDCs {
		if err := hostPort(h); err != nil {
			add(fmt.Sprintf("kdcs[%d]", i), "%v", err)
		}
	}
	if k.SPN != "" {
		if svc, host, ok := strings.Cut(k.SPN, "/"); !ok || svc == "" || host == "" {
			add("spn", "must be service/host, e.g. ldap/dc1.example.com (got %q)", k.SPN)
		}
	}
	return errs
}

// readable checks that path names a file this process can open.
func readable(path string) error {
	if path == "" {
		return fmt.Errorf("required")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// hostPort accepts host or host:port.
func hostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.Trim(s, "[]"), "88"
	}
	if n, perr := strconv.Atoi(port); host == "" || strings.ContainsAny(host, " /") || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("must be host or host:port (got %q)", s)
	}
	return nil
}
