package ldapconn

import (
	"errors"
	"fmt"

	"github.com/go-ldap/ldap/v3"
)

// DialFirst connects and binds to the first of a domain's DCs that
// answers, in the order given (the preferred first), each checked against
// caFile for its own host name; cfg.URL is ignored. It returns the DC used.
// Every AD writer of pwsync (the AD writer, campaigns) reaches a domain so,
// as the watcher does.
func DialFirst(urls []string, cfg Config, caFile string, insecure bool) (*ldap.Conn, string, error) {
	if len(urls) == 0 {
		return nil, "", errors.New("no DC to connect to")
	}
	var errs []error
	for _, u := range urls {
		tc, err := TLSConfig(u, caFile, insecure)
		if err != nil {
			return nil, "", fmt.Errorf("TLS for %s: %w", u, err)
		}
		c := cfg
		c.URL = u
		conn, err := Dial(c, tc)
		if err == nil {
			return conn, u, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, "", fmt.Errorf("no DC answers: %w", errors.Join(errs...))
}
