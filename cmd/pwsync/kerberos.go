package main

import (
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/ldapconn"
)

// ldapKerberos is a domain's kerberos: settings as ldapconn takes them (nil
// without: a simple bind).
func ldapKerberos(k *config.Kerberos) *ldapconn.Kerberos {
	if k == nil {
		return nil
	}
	return &ldapconn.Kerberos{Realm: k.Realm, Principal: k.Principal, KeytabFile: k.KeytabFile,
		KRB5Conf: k.KRB5Conf, KDCs: k.KDCs, SPN: k.SPN}
}
