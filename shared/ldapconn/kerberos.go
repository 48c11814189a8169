package ldapconn

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/go-ldap/ldap/v3"
	"github.com/go-ldap/ldap/v3/gssapi"
	"github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// Kerberos binds with SASL GSSAPI (Kerberos 5) and a keytab instead of a
// DN and password. The bind runs inside the TLS session (LDAPS or
// StartTLS): go-ldap's GSSAPI client negotiates no SASL security layer, TLS
// protects the traffic, as it does for a simple bind.
type Kerberos struct {
	// Realm is the Kerberos realm, EXAMPLE.COM. Empty: the principal's
	// @REALM, else the krb5.conf's default_realm.
	Realm string
	// Principal is the account, svc-pwsync or svc-pwsync@EXAMPLE.COM.
	Principal  string
	KeytabFile string
	// KRB5Conf is a krb5.conf to read (realms, KDCs, enctypes); optional.
	KRB5Conf string
	// KDCs are host[:port] of the realm's KDCs (port 88 by default). Empty:
	// the krb5.conf's, else DNS SRV _kerberos._tcp/_udp.<realm>.
	KDCs []string
	// SPN is the DC's service principal, ldap/dc1.example.com. Empty:
	// ldap/<the URL's host>, or ldap/<the rootDSE's dnsHostName> when the
	// URL names the DC by IP address (a ticket is for a name, never an IP).
	SPN string
}

// Name is the principal as principal@REALM, for logs and messages.
func (k Kerberos) Name() string {
	user, realm, err := k.split(nil)
	if err != nil {
		return k.Principal
	}
	return user + "@" + realm
}

// split returns the principal without its realm, and the realm.
func (k Kerberos) split(conf *krbconfig.Config) (user, realm string, err error) {
	user, pRealm, hasRealm := strings.Cut(k.Principal, "@")
	if user == "" {
		return "", "", fmt.Errorf("%w: the Kerberos principal is empty", ErrKerberosConfig)
	}
	realm = k.Realm
	switch {
	case hasRealm && realm != "" && pRealm != realm:
		return "", "", fmt.Errorf("%w: principal %s names realm %s, but the realm is %s", ErrKerberosConfig, k.Principal, pRealm, realm)
	case hasRealm:
		realm = pRealm
	case realm == "" && conf != nil:
		realm = conf.LibDefaults.DefaultRealm
	}
	if realm == "" {
		return "", "", fmt.Errorf("%w: no realm for principal %s (set the realm, or principal@REALM)", ErrKerberosConfig, k.Principal)
	}
	return user, realm, nil
}

// krb5Config is the krb5.conf (gokrb5's defaults without one) with the
// explicit KDCs put in; without KDCs from either, DNS SRV records are used.
func (k Kerberos) krb5Config(realm string) (*krbconfig.Config, error) {
	conf := krbconfig.New()
	if k.KRB5Conf != "" {
		var err error
		if conf, err = krbconfig.Load(k.KRB5Conf); err != nil {
			return nil, fmt.Errorf("%w: reading krb5.conf %s: %v", ErrKerberosConfig, k.KRB5Conf, err)
		}
	}
	if realm == "" {
		return conf, nil
	}
	if len(k.KDCs) > 0 {
		setKDCs(conf, realm, withPort(k.KDCs))
		conf.LibDefaults.DNSLookupKDC = false
	} else if !hasKDCs(conf, realm) {
		conf.LibDefaults.DNSLookupKDC = true
	}
	return conf, nil
}

func setKDCs(conf *krbconfig.Config, realm string, kdcs []string) {
	for i := range conf.Realms {
		if conf.Realms[i].Realm == realm {
			conf.Realms[i].KDC = kdcs
			return
		}
	}
	conf.Realms = append(conf.Realms, krbconfig.Realm{Realm: realm, KDC: kdcs})
}

func hasKDCs(conf *krbconfig.Config, realm string) bool {
	for _, r := range conf.Realms {
		if r.Realm == realm && len(r.KDC) > 0 {
			return true
		}
	}
	return false
}

// withPort adds Kerberos' port 88 where a KDC has none.
func withPort(kdcs []string) []string {
	out := make([]string, 0, len(kdcs))
	for _, h := range kdcs {
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "88")
		}
		out = append(out, h)
	}
	return out
}

// newClient loads the krb5.conf and keytab and checks that the keytab holds
// the principal; it does not log in.
func (k Kerberos) newClient() (*client.Client, error) {
	base, err := k.krb5Config("")
	if err != nil {
		return nil, err
	}
	user, realm, err := k.split(base)
	if err != nil {
		return nil, err
	}
	conf, err := k.krb5Config(realm)
	if err != nil {
		return nil, err
	}
	kt, err := loadKeytab(k.KeytabFile)
	if err != nil {
		return nil, err
	}
	if err := holdsPrincipal(kt, user, realm); err != nil {
		return nil, err
	}
	// AD answers PA-FX-FAST requests oddly; gokrb5 advises turning it off.
	return client.NewWithKeytab(user, realm, kt, conf, client.DisablePAFXFAST(true), client.Logger(gokrbLogger())), nil
}

func loadKeytab(path string) (*keytab.Keytab, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no keytab file given", ErrKeytab)
	}
	kt, err := keytab.Load(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeytab, path, err)
	}
	return kt, nil
}

// bindKerberos runs the GSSAPI bind on c. A failure with the cached client
// (a ticket the DC no longer takes, a client torn down) is tried once more
// with a new login, so a stale ticket costs a retry, not a restart.
func bindKerberos(c *ldap.Conn, cfg Config) error {
	k := *cfg.Kerberos
	spn, err := k.spnFor(c, cfg.URL)
	if err != nil {
		return err
	}
	var cl *client.Client
	var bindErr error
	for attempt := 0; attempt < 2; attempt++ {
		if cl, err = k.client(cl); err != nil {
			return fmt.Errorf("binding to %s with Kerberos: %w", cfg.URL, err)
		}
		// a gssapi.Client per bind: it holds the bind's session keys
		bindErr = c.GSSAPIBind(&gssapi.Client{Client: cl}, spn, "")
		if bindErr == nil || IsNetwork(bindErr) || !retryable(bindErr) {
			break
		}
		logger().Warn().Str("principal", k.Name()).Str("spn", spn).Str("url", cfg.URL).AnErr("error", bindErr).
			Int("attempt", attempt+1).Msg("kerberos: GSSAPI bind failed")
	}
	if bindErr != nil {
		return classify(fmt.Sprintf("binding to %s with Kerberos as %s (SPN %s)", cfg.URL, k.Name(), spn), bindErr)
	}
	return nil
}

// KerberosSPN is the SPN a Kerberos bind on c (connected to cfg.URL)
// asks a ticket for.
func KerberosSPN(c *ldap.Conn, cfg Config) (string, error) {
	if cfg.Kerberos == nil {
		return "", fmt.Errorf("%w: no Kerberos settings", ErrKerberosConfig)
	}
	return cfg.Kerberos.spnFor(c, cfg.URL)
}

// spnFor is the SPN to ask a ticket for: the configured one, else
// ldap/<URL host>, else, for an IP address, ldap/<the DC's dnsHostName>
// from the rootDSE (readable before a bind).
func (k Kerberos) spnFor(c *ldap.Conn, rawURL string) (string, error) {
	if k.SPN != "" {
		return k.SPN, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("URL %q: %w", rawURL, err)
	}
	host := u.Hostname()
	if net.ParseIP(host) == nil {
		return "ldap/" + host, nil
	}
	name, err := dnsHostName(c)
	if err != nil {
		return "", fmt.Errorf("%w: %s names the DC by IP address and its rootDSE gives no dnsHostName (%w): set the Kerberos SPN (ldap/<the DC's FQDN>)",
			ErrSPNUnknown, rawURL, err)
	}
	return "ldap/" + name, nil
}

func dnsHostName(c *ldap.Conn) (string, error) {
	res, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"dnsHostName"}, nil))
	if err != nil {
		return "", err
	}
	if len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("dnsHostName") == "" {
		return "", fmt.Errorf("no dnsHostName")
	}
	return res.Entries[0].GetAttributeValue("dnsHostName"), nil
}
