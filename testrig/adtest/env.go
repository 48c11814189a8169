package adtest

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// parseEnv reads the KEY='value' file that scripts/samba-ad/start.sh writes.
// Values are single-quoted shell words (a quote inside is written quote,
// backslash, quote, quote).
func parseEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, raw, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("reading %s: line %d is not KEY=VALUE", path, n)
		}
		val, err := unquote(raw)
		if err != nil {
			return nil, fmt.Errorf("reading %s: line %d: %w", path, n, err)
		}
		vars[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return vars, nil
}

// unquote undoes shell single quoting ('a'\”b' -> a'b); bare words pass as they are.
func unquote(s string) (string, error) {
	var b strings.Builder
	for len(s) > 0 {
		switch s[0] {
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return "", fmt.Errorf("unterminated quote in %q", s)
			}
			b.WriteString(s[1 : 1+end])
			s = s[2+end:]
		case '\\':
			if len(s) < 2 {
				return "", fmt.Errorf("trailing backslash")
			}
			b.WriteByte(s[1])
			s = s[2:]
		default:
			b.WriteByte(s[0])
			s = s[1:]
		}
	}
	return b.String(), nil
}

// envFile is where start.sh leaves the settings of the running DC.
func envFile() string {
	dir := os.Getenv("SAMBA_AD_DIR")
	if dir == "" {
		dir = "/tmp/samba-ad"
	}
	return filepath.Join(dir, "env")
}

// dcFromEnv builds a DC from start.sh's settings; every field must be there.
func dcFromEnv(vars map[string]string) (*DC, error) {
	dc := &DC{
		LDAPURL:      vars["SAMBA_AD_LDAP_URL"],
		LDAPSURL:     vars["SAMBA_AD_LDAPS_URL"],
		BaseDN:       vars["SAMBA_AD_BASE_DN"],
		BindDN:       vars["SAMBA_AD_BIND_DN"],
		BindUPN:      vars["SAMBA_AD_BIND_UPN"],
		BindPassword: vars["SAMBA_AD_BIND_PASSWORD"],
		CAFile:       vars["SAMBA_AD_CA_CERT"],
		Realm:        vars["SAMBA_AD_REALM"],
		Dir:          vars["SAMBA_AD_DIR"],
		IP:           vars["SAMBA_AD_DC_IP"],
		Hostname:     vars["SAMBA_AD_DC_HOSTNAME"],
	}
	if dc.IP == "" { // an env file of a start.sh before SAMBA_AD_DC_IP: the URL's host
		if u, err := url.Parse(dc.LDAPSURL); err == nil {
			dc.IP = u.Hostname()
		}
	}
	for name, v := range map[string]string{
		"SAMBA_AD_LDAP_URL": dc.LDAPURL, "SAMBA_AD_LDAPS_URL": dc.LDAPSURL, "SAMBA_AD_BASE_DN": dc.BaseDN,
		"SAMBA_AD_BIND_DN": dc.BindDN, "SAMBA_AD_BIND_UPN": dc.BindUPN, "SAMBA_AD_BIND_PASSWORD": dc.BindPassword,
		"SAMBA_AD_CA_CERT": dc.CAFile, "SAMBA_AD_REALM": dc.Realm,
	} {
		if v == "" {
			return nil, fmt.Errorf("%s is missing", name)
		}
	}
	return dc, nil
}
