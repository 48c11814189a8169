package adwatch

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/ldapconn"
)

// requestTimeout bounds one LDAP request on the polling connection, so that a
// DC that stops answering ends the session instead of hanging it. Generous:
// a DirSync after a mass change returns every changed object in one response.
const requestTimeout = 2 * time.Minute

// dial connects to the DC in use (the first configured before any
// session picked one): the change notifications and policy reads must ask
// the DC the session polls.
func (w *Watcher) dial() (*ldap.Conn, error) {
	dc := w.DC()
	if dc == "" && len(w.cfg.URLs) > 0 {
		dc = w.cfg.URLs[0]
	}
	if dc == "" {
		return nil, fmt.Errorf("no DC of %s known yet", w.cfg.Domain)
	}
	return w.dialURL(dc)
}

// dialURL connects to one DC over TLS (or plain LDAP when explicitly
// allowed) and binds as the service account.
func (w *Watcher) dialURL(dc string) (*ldap.Conn, error) {
	tc, err := w.cfg.tlsConfig(dc)
	if err != nil {
		return nil, err
	}
	return ldapconn.Dial(ldapconn.Config{URL: dc, StartTLS: w.cfg.StartTLS,
		BindDN: w.cfg.BindDN, BindPassword: w.cfg.BindPassword, Kerberos: w.cfg.Kerberos,
		DialTimeout: w.cfg.DialTimeout, KeepAlive: 30 * time.Second, RequestTimeout: requestTimeout}, tc)
}

// ldapCode is the LDAP result code of err, or -1 when err is not an LDAP result.
func ldapCode(err error) int {
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode != ldap.ErrorNetwork {
		return int(le.ResultCode)
	}
	return -1
}

// rootDSE is what the watcher reads from the DC's rootDSE.
type rootDSE struct {
	HighestCommittedUSN  int64
	DefaultNamingContext string
	DNSHostName          string
	DSServiceName        string // the DC's nTDSDSA object ("NTDS Settings"), which holds its invocationId
}

func readRootDSE(c *ldap.Conn) (rootDSE, error) {
	res, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"highestCommittedUSN", "defaultNamingContext", "dnsHostName", "dsServiceName"}, nil))
	if err != nil {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: %w", err)
	}
	if len(res.Entries) != 1 {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: %d entries", len(res.Entries))
	}
	e := res.Entries[0]
	usn, err := strconv.ParseInt(e.GetAttributeValue("highestCommittedUSN"), 10, 64)
	if err != nil {
		return rootDSE{}, fmt.Errorf("reading the rootDSE: highestCommittedUSN %q: %w", e.GetAttributeValue("highestCommittedUSN"), err)
	}
	return rootDSE{
		HighestCommittedUSN:  usn,
		DefaultNamingContext: e.GetAttributeValue("defaultNamingContext"),
		DNSHostName:          e.GetAttributeValue("dnsHostName"),
		DSServiceName:        e.GetAttributeValue("dsServiceName"),
	}, nil
}

// readInvocationID returns the invocationId of the DC whose nTDSDSA object
// is dsa (rootDSE dsServiceName), as a canonical GUID string. A DC takes a
// new invocationId when it is restored from a backup (MS-ADTS 3.1.1.1.9;
// and a VM snapshot restored with VM-GenerationID support): its USNs then
// restart below ones already handed out, and a uSNChanged watermark taken
// before would skip the changes made since. Microsoft's "Example Code to
// Retrieve Changes Using USNChanged" keys its watermark the same way.
func readInvocationID(c *ldap.Conn, dsa string) (string, error) {
	if dsa == "" {
		return "", errors.New("the rootDSE has no dsServiceName")
	}
	res, err := c.Search(ldap.NewSearchRequest(dsa, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"invocationId"}, nil))
	if err != nil {
		return "", fmt.Errorf("reading the invocationId of %s: %w", dsa, err)
	}
	if len(res.Entries) != 1 {
		return "", fmt.Errorf("reading the invocationId of %s: %d entries", dsa, len(res.Entries))
	}
	id, err := events.GUIDString(res.Entries[0].GetRawAttributeValue("invocationId"))
	if err != nil {
		return "", fmt.Errorf("reading the invocationId of %s: %w", dsa, err)
	}
	return id, nil
}
