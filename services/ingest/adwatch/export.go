package adwatch

import (
	"slices"

	"github.com/go-ldap/ldap/v3"
)

// Dial connects and binds exactly as a watcher on cfg would (TLS settings,
// StartTLS, timeouts), for tools that must judge what the watcher does:
// `pwsync conformance`. The caller closes the connection.
func Dial(cfg Config) (*ldap.Conn, error) {
	cfg = cfg.withDefaults()
	w := &Watcher{cfg: cfg}
	return w.dial()
}

// UserAttributes are the attributes the watcher reads for each user (the
// msDS-* ones are constructed by the DC).
func UserAttributes() []string { return slices.Clone(userAttrs) }

// DirSyncAttributes are the attributes of the watcher's DirSync users stream.
func DirSyncAttributes() []string { return slices.Clone(usersStream.attrs) }

// DirSyncFilter is the filter of the watcher's DirSync users stream.
func DirSyncFilter() string { return usersStream.filter }

// DirSyncObjectSecurity is the DirSync flag the watcher sends.
const DirSyncObjectSecurity = dirSyncObjectSecurity

// NotificationRequest is the watcher's change-notification search at base.
// Samba accepts only the filter (objectClass=*) with the control; "1.1"
// asks for no attributes: a push is only a trigger.
func NotificationRequest(base string) *ldap.SearchRequest {
	return ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, []ldap.Control{ldap.NewControlMicrosoftNotification()})
}

// ImmutableID is the cloud anchor (onPremisesImmutableId) the watcher
// derives from an entry read with UserAttributes.
func ImmutableID(cfg Config, e *ldap.Entry) string {
	w := &Watcher{cfg: cfg}
	return w.immutableID(e, e.GetRawAttributeValue("objectGUID"))
}
