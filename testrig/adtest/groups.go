package adtest

import (
	"strconv"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// groupTypeGlobalSecurity is a global security group (PSOs apply to those).
const groupTypeGlobalSecurity = "-2147483646"

// Group types (groupType) for CreateGroupOfType: a scope bit, plus the
// security bit 0x80000000 for security groups.
const (
	GroupGlobalSecurity      int32 = -0x80000000 | 0x2 // CreateGroup's kind
	GroupDomainLocalSecurity int32 = -0x80000000 | 0x4
	GroupUniversalSecurity   int32 = -0x80000000 | 0x8
	GroupGlobalDistribution  int32 = 0x2
)

// CreateGroup creates a global security group in ouDN (removed with the OU)
// and returns its DN. The name gets a unique suffix, as users' do.
func (dc *DC) CreateGroup(t testing.TB, ouDN, name string) string {
	t.Helper()
	return dc.createGroup(t, ouDN, name, groupTypeGlobalSecurity)
}

// CreateGroupOfType creates a group of the given groupType (Group* above)
// in ouDN, as CreateGroup does.
func (dc *DC) CreateGroupOfType(t testing.TB, ouDN, name string, groupType int32) string {
	t.Helper()
	return dc.createGroup(t, ouDN, name, strconv.FormatInt(int64(groupType), 10))
}

func (dc *DC) createGroup(t testing.TB, ouDN, name, groupType string) string {
	t.Helper()
	name += suffix()
	if err := checkSAM(name); err != nil {
		t.Fatalf("adtest: %v", err)
	}
	dn := "CN=" + ldap.EscapeDN(name) + "," + ouDN
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"group"})
	req.Attribute("sAMAccountName", []string{name})
	req.Attribute("groupType", []string{groupType})
	if err := dc.admin(t).Add(req); err != nil {
		t.Fatalf("adtest: creating group %s: %v", dn, err)
	}
	return dn
}

// AddMember adds member (a user or a group, for nesting) to group.
func (dc *DC) AddMember(t testing.TB, group, member string) {
	t.Helper()
	dc.modify(t, group, func(m *ldap.ModifyRequest) { m.Add("member", []string{member}) })
}

// RemoveMember removes member from group.
func (dc *DC) RemoveMember(t testing.TB, group, member string) {
	t.Helper()
	dc.modify(t, group, func(m *ldap.ModifyRequest) { m.Delete("member", []string{member}) })
}

// CreatePSO creates a fine-grained password policy in the Password Settings
// Container applying to appliesTo (group or user DNs), over LDAP as
// `samba-tool domain passwordsettings pso create` + `pso apply` would, and
// deletes it when the test ends. The name gets a unique suffix; maxAge is
// the maximum password age (whole seconds). Precedence decides between PSOs.
func (dc *DC) CreatePSO(t testing.TB, name string, precedence int, maxAge time.Duration, appliesTo ...string) string {
	t.Helper()
	name += suffix()
	dn := "CN=" + ldap.EscapeDN(name) + ",CN=Password Settings Container,CN=System," + dc.BaseDN
	ticks := func(d time.Duration) string { return strconv.FormatInt(-int64(d/100), 10) }
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute("objectClass", []string{"msDS-PasswordSettings"})
	req.Attribute("msDS-PasswordSettingsPrecedence", []string{strconv.Itoa(precedence)})
	req.Attribute("msDS-PasswordReversibleEncryptionEnabled", []string{"FALSE"})
	req.Attribute("msDS-PasswordHistoryLength", []string{"0"})
	req.Attribute("msDS-PasswordComplexityEnabled", []string{"FALSE"})
	req.Attribute("msDS-MinimumPasswordLength", []string{"7"})
	req.Attribute("msDS-MinimumPasswordAge", []string{"0"})
	req.Attribute("msDS-MaximumPasswordAge", []string{ticks(maxAge)})
	req.Attribute("msDS-LockoutThreshold", []string{"0"})
	req.Attribute("msDS-LockoutObservationWindow", []string{ticks(30 * time.Minute)})
	req.Attribute("msDS-LockoutDuration", []string{ticks(30 * time.Minute)})
	if len(appliesTo) > 0 {
		req.Attribute("msDS-PSOAppliesTo", appliesTo)
	}
	c := dc.admin(t)
	if err := c.Add(req); err != nil {
		t.Fatalf("adtest: creating PSO %s: %v", dn, err)
	}
	t.Cleanup(func() {
		cc, err := dc.dial()
		if err != nil {
			t.Errorf("adtest: removing PSO %s: %v", dn, err)
			return
		}
		defer cc.Close()
		if err := cc.Del(ldap.NewDelRequest(dn, nil)); err != nil && !isCode(err, ldap.LDAPResultNoSuchObject) {
			t.Errorf("adtest: removing PSO %s: %v", dn, err)
		}
	})
	return dn
}

// SetPSOMaxAge changes a PSO's maximum password age.
func (dc *DC) SetPSOMaxAge(t testing.TB, dn string, maxAge time.Duration) {
	t.Helper()
	dc.modify(t, dn, func(m *ldap.ModifyRequest) {
		m.Replace("msDS-MaximumPasswordAge", []string{strconv.FormatInt(-int64(maxAge/100), 10)})
	})
}

// ApplyPSO applies a PSO to more users or groups (adds them to its
// msDS-PSOAppliesTo), as `samba-tool domain passwordsettings pso apply` does.
func (dc *DC) ApplyPSO(t testing.TB, psoDN string, targets ...string) {
	t.Helper()
	dc.modify(t, psoDN, func(m *ldap.ModifyRequest) { m.Add("msDS-PSOAppliesTo", targets) })
}
