package ldapconn_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/testrig/adtest"
)

// TestPing: a DC that answers its rootDSE passes (ldaps and ldap); a
// listener that takes the connection and says nothing (a hung DC) fails
// within the timeout, and so does one that refuses.
func TestPing(t *testing.T) {
	dc := adtest.Require(t)
	tc, err := ldapconn.TLSConfig(dc.LDAPSURL, dc.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() { // accept and hold, as a stopped process's kernel does
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()
	const timeout = 2 * time.Second
	for _, tc2 := range []struct {
		name, url, wantErr string
	}{
		{"ldaps DC", dc.LDAPSURL, ""},
		{"ldap DC", "ldap://" + dc.IP + ":389", ""},
		{"hung over TLS", "ldaps://" + silent.Addr().String(), "connecting to"},
		{"hung over plain LDAP", "ldap://" + silent.Addr().String(), "within 2s"},
		{"refused", "ldaps://" + refusedAddr, "connection refused"},
	} {
		t.Run(tc2.name, func(t *testing.T) {
			start := time.Now()
			err := ldapconn.Ping(context.Background(), tc2.url, tc, timeout)
			took := time.Since(start)
			if took > timeout+time.Second {
				t.Fatalf("took %v, want at most the timeout %v", took, timeout)
			}
			if tc2.wantErr == "" {
				if err != nil {
					t.Fatalf("ping: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc2.wantErr) {
				t.Fatalf("ping error %v, want one containing %q", err, tc2.wantErr)
			}
		})
	}
}
