package ldapconn

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
)

// KeytabInfo is what a keytab holds for one principal (never its keys).
type KeytabInfo struct {
	Principal string   // user@REALM as in the keytab
	KVNO      uint32   // the newest key version
	EncTypes  []string // of the newest version, e.g. aes256-cts-hmac-sha1-96
	Weak      bool     // only RC4 or DES keys: AD may refuse them
}

// Ticket is a TGT got by Kinit.
type Ticket struct {
	Principal string
	EndTime   time.Time
	RenewTill time.Time // zero: not renewable (a new login from the keytab then)
	KDCEType  string    // the session key's encryption type
}

// encTypeNames names the encryption types a keytab for AD holds.
var encTypeNames = map[int32]string{
	1: "des-cbc-crc", 3: "des-cbc-md5", 17: "aes128-cts-hmac-sha1-96", 18: "aes256-cts-hmac-sha1-96",
	19: "aes128-cts-hmac-sha256-128", 20: "aes256-cts-hmac-sha384-192", 23: "rc4-hmac",
}

func encTypeName(e int32) string {
	if n, ok := encTypeNames[e]; ok {
		return n
	}
	return "enctype-" + strconv.Itoa(int(e))
}

// InspectKeytab reads k's keytab and reports the principal's newest keys.
func InspectKeytab(k Kerberos) (KeytabInfo, error) {
	base, err := k.krb5Config("")
	if err != nil {
		return KeytabInfo{}, err
	}
	user, realm, err := k.split(base)
	if err != nil {
		return KeytabInfo{}, err
	}
	kt, err := loadKeytab(k.KeytabFile)
	if err != nil {
		return KeytabInfo{}, err
	}
	if err := holdsPrincipal(kt, user, realm); err != nil {
		return KeytabInfo{}, err
	}
	info := KeytabInfo{Principal: user + "@" + realm, Weak: true}
	for _, e := range kt.Entries {
		if samePrincipal(e.Principal.Components, e.Principal.Realm, user, realm) && e.KVNO > info.KVNO {
			info.KVNO = e.KVNO
		}
	}
	for _, e := range kt.Entries {
		if samePrincipal(e.Principal.Components, e.Principal.Realm, user, realm) && e.KVNO == info.KVNO {
			info.EncTypes = append(info.EncTypes, encTypeName(e.Key.KeyType))
			if e.Key.KeyType >= 17 && e.Key.KeyType <= 20 {
				info.Weak = false
			}
		}
	}
	return info, nil
}

func samePrincipal(components []string, ktRealm, user, realm string) bool {
	return ktRealm == realm && strings.Join(components, "/") == user
}

// holdsPrincipal checks that kt has keys for user@realm, naming what it
// holds instead when it has none.
func holdsPrincipal(kt *keytab.Keytab, user, realm string) error {
	var held []string
	for _, e := range kt.Entries {
		if samePrincipal(e.Principal.Components, e.Principal.Realm, user, realm) {
			return nil
		}
		if p := strings.Join(e.Principal.Components, "/") + "@" + e.Principal.Realm; !slices.Contains(held, p) {
			held = append(held, p)
		}
	}
	if len(held) == 0 {
		return fmt.Errorf("%w: %s@%s: the keytab is empty", ErrNotInKeytab, user, realm)
	}
	return fmt.Errorf("%w: %s@%s: it holds %s (principal and realm are case-sensitive)",
		ErrNotInKeytab, user, realm, strings.Join(held, ", "))
}

// Kinit gets a TGT for k from its keytab with a client of its own (not the
// cached one), as kinit -k would: doctor's check of the keytab and KDCs.
func Kinit(k Kerberos) (Ticket, error) {
	cl, err := k.newClient()
	if err != nil {
		return Ticket{}, err
	}
	defer cl.Destroy()
	realm := cl.Credentials.Domain()
	req, err := messages.NewASReqForTGT(realm, cl.Config, cl.Credentials.CName())
	if err != nil {
		return Ticket{}, fmt.Errorf("Kerberos login as %s: %w", k.Name(), err)
	}
	rep, err := cl.ASExchange(realm, req, 0)
	if err != nil {
		return Ticket{}, classify(fmt.Sprintf("Kerberos login as %s", k.Name()), err)
	}
	part := rep.DecryptedEncPart
	return Ticket{Principal: k.Name(), EndTime: part.EndTime, RenewTill: part.RenewTill,
		KDCEType: encTypeName(part.Key.KeyType)}, nil
}
