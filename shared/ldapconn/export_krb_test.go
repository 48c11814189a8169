package ldapconn

import "testing"

// KerberosLogins is how many logins (AS exchanges) new clients made.
func KerberosLogins() int64 { return krbLogins.Load() }

// DestroyKerberosClient tears down k's cached client as an expired,
// unrenewable TGT would leave it: no ticket, no credentials.
func DestroyKerberosClient(t *testing.T, k Kerberos) {
	t.Helper()
	v, ok := krbSlots.Load(k.cacheKey())
	if !ok {
		t.Fatal("no cached Kerberos client")
	}
	slot := v.(*krbSlot)
	slot.mu.Lock()
	defer slot.mu.Unlock()
	slot.cur.cl.Destroy()
}
