// Package adminapitest starts a real admin API (TLS, tokens, audit to a real
// NATS) for tests of packages that register routes on it. Import it from
// _test.go files only.
package adminapitest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/audit"
	"github.com/pwsync/pwsync/shared/natsx"
)

// TLSFiles writes a fresh CA and a server certificate for 127.0.0.1 and
// localhost signed by it into a temp dir.
func TLSFiles(t testing.TB) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pwsync test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pwsync admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// NewToken returns a random token and its config entry.
func NewToken(t testing.TB, name string, roles ...adminapi.Role) (string, adminapi.Token) {
	t.Helper()
	tok, hash, err := adminapi.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok, adminapi.Token{Name: name, SHA256: hash, Roles: roles}
}

// Env is a running admin API.
type Env struct {
	Server *adminapi.Server
	CAFile string
	URL    string
}

// Client returns a client that trusts the test CA.
func (e *Env) Client(t testing.TB, token string) *adminapi.Client {
	t.Helper()
	c, err := adminapi.NewClient(e.URL, token, e.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Start runs an admin API over TLS on a random loopback port, auditing to
// conn's AUDIT stream. register adds routes before it starts (may be nil).
// It stops when the test ends.
func Start(t testing.TB, conn *natsx.Conn, register func(*adminapi.Server), tokens ...adminapi.Token) *Env {
	t.Helper()
	ca, cert, key := TLSFiles(t)
	s, err := adminapi.New(adminapi.Config{Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, Tokens: tokens},
		adminapi.Deps{Audit: audit.NewWriter(natsx.NewPublisher(conn.JS), nil), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if register != nil {
		register(s)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin api: %v", err)
		}
	})
	return &Env{Server: s, CAFile: ca, URL: s.URL()}
}
