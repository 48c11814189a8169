package ldapconn

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
)

// The Kerberos clients, one per principal, keytab and KDC set: every
// connection of the process binds with the same TGT, which gokrb5 renews
// before it expires (and, past its renewable life or when not renewable,
// gets anew from the keytab), so a long-running pwsync never needs a restart
// for its tickets. Service tickets are cached the same way. A keytab that
// changed on disk (exported again after the account's password changed)
// makes a new client on the next dial.
var (
	krbSlots sync.Map // cacheKey -> *krbSlot
	// krbLogins counts logins (AS exchanges) made for new clients.
	krbLogins atomic.Int64
)

// krbSlot holds the current client of one cache key; its lock serializes
// that key's logins, so a burst of dials logs in once.
type krbSlot struct {
	mu  sync.Mutex
	cur *krbClient
}

// krbClient is one logged-in client and the keytab version it was made from.
type krbClient struct {
	cl     *client.Client
	ktMod  time.Time
	ktSize int64
}

func (k Kerberos) cacheKey() string {
	return strings.Join([]string{k.Principal, k.Realm, k.KeytabFile, k.KRB5Conf, strings.Join(k.KDCs, ",")}, "\x00")
}

// client returns the cached, logged-in client for k. It logs in anew when
// there is none, when the keytab changed, or when failed (a client a bind
// just failed with) is still the current one.
func (k Kerberos) client(failed *client.Client) (*client.Client, error) {
	st, err := os.Stat(k.KeytabFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeytab, err)
	}
	v, _ := krbSlots.LoadOrStore(k.cacheKey(), &krbSlot{})
	slot := v.(*krbSlot)
	slot.mu.Lock()
	defer slot.mu.Unlock()
	cur := slot.cur
	if cur != nil && cur.ktMod.Equal(st.ModTime()) && cur.ktSize == st.Size() && (failed == nil || cur.cl != failed) {
		return cur.cl, nil
	}
	cl, err := k.login()
	if err != nil {
		return nil, err
	}
	if cur != nil {
		cur.cl.Destroy() // stops its renewal; a bind still using it retries once
	}
	slot.cur = &krbClient{cl: cl, ktMod: st.ModTime(), ktSize: st.Size()}
	return cl, nil
}

// login makes a client from the keytab and gets its TGT (kinit -k).
func (k Kerberos) login() (*client.Client, error) {
	cl, err := k.newClient()
	if err != nil {
		return nil, err
	}
	krbLogins.Add(1)
	if err := cl.Login(); err != nil {
		return nil, classify(fmt.Sprintf("Kerberos login as %s", k.Name()), err)
	}
	logger().Info().Str("principal", k.Name()).Str("keytab", k.KeytabFile).Msg("kerberos: got a ticket-granting ticket")
	return cl, nil
}
