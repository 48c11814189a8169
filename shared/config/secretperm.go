package config

import (
	"fmt"
	"os"
	"strings"
)

// secretFileWarnings names every file that holds a secret (file: secrets,
// AD keytabs, the Graph certificate with its private key, NATS credentials,
// the webhook's and admin API's TLS private keys) and that group or others
// may read: anyone with a shell on the host could act as
// pwsync.
func (c *Config) secretFileWarnings() []string {
	files := map[string]string{}
	for i, d := range c.AD.Domains {
		if p, ok := strings.CutPrefix(d.BindPassword.ref, "file:"); ok {
			files[fmt.Sprintf("ad.domains[%d].bind_password", i)] = p
		}
		if d.Kerberos != nil && d.Kerberos.KeytabFile != "" { // a keytab is as good as the password
			files[fmt.Sprintf("ad.domains[%d].kerberos.keytab_file", i)] = d.Kerberos.KeytabFile
		}
	}
	for key, s := range map[string]Secret{"graph.client_secret": c.Graph.ClientSecret,
		"graph.certificate_password": c.Graph.CertificatePassword, "notify.workflows_webhook_url": c.Notify.WorkflowsWebhookURL} {
		if p, ok := strings.CutPrefix(s.ref, "file:"); ok {
			files[key] = p
		}
	}
	for key, p := range map[string]string{"graph.certificate_file": c.Graph.CertificateFile,
		"nats.creds_file": c.NATS.CredsFile, "nats.nkey_file": c.NATS.NKeyFile,
		// TLS private keys: whoever reads one can impersonate the listener.
		"webhook.tls_key": c.Webhook.TLSKey, "admin.tls_key": c.Admin.TLSKey} {
		if p != "" {
			files[key] = p
		}
	}
	var out []string
	for key, p := range files {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o044 != 0 {
			out = append(out, fmt.Sprintf("%s: %s is readable by group or others (mode %v): chmod 600 it", key, p, st.Mode().Perm()))
		}
	}
	return out
}
