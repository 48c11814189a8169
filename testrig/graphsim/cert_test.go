package graphsim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"
)

type testCert struct {
	key  *rsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

func newTestCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// assertion builds a client assertion as MSAL does (PS256, x5t#S256 in
// standard base64), with hooks to break it.
func assertion(t *testing.T, signer *rsa.PrivateKey, header map[string]any, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	digest := sha256.Sum256([]byte(signing))
	var sig []byte
	var err error
	switch header["alg"] {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, signer, crypto.SHA256, digest[:])
	default:
		sig, err = rsa.SignPSS(rand.Reader, signer, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	}
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64.EncodeToString(sig)
}

func TestCertificateCredential(t *testing.T) {
	registered := newTestCert(t, "registered")
	other := newTestCert(t, "other")
	e := newEnv(t, Options{ClientCertPEM: registered.pem})
	id := e.srv.ClientID()
	tokenURL := e.srv.AuthorityHost() + e.srv.TenantID() + "/oauth2/v2.0/token"
	s256 := func(c *x509.Certificate) string {
		h := sha256.Sum256(c.Raw)
		return base64.StdEncoding.EncodeToString(h[:])
	}
	s1 := func(c *x509.Certificate) string {
		h := sha1.Sum(c.Raw)
		return base64.RawURLEncoding.EncodeToString(h[:])
	} //nolint:gosec
	goodClaims := func() map[string]any {
		now := time.Now().Unix()
		return map[string]any{"aud": tokenURL, "iss": id, "sub": id, "jti": newGUID(), "nbf": now, "exp": now + 600}
	}
	with := func(k string, v any) map[string]any { c := goodClaims(); c[k] = v; return c }
	ps := map[string]any{"alg": "PS256", "typ": "JWT", "x5t#S256": s256(registered.cert)}

	tests := []struct {
		name     string
		assert   string
		typ      string
		want     int
		wantCode float64
	}{
		{"PS256 with x5t#S256 (MSAL)", assertion(t, registered.key, ps, goodClaims()), "", 200, 0},
		{"RS256 with x5t", assertion(t, registered.key, map[string]any{"alg": "RS256", "x5t": s1(registered.cert)}, goodClaims()), "", 200, 0},
		{"no thumbprint", assertion(t, registered.key, map[string]any{"alg": "RS256"}, goodClaims()), "", 200, 0},
		{"aud as a list", assertion(t, registered.key, ps, with("aud", []string{tokenURL})), "", 200, 0},
		{"signed by another key", assertion(t, other.key, ps, goodClaims()), "", 401, 700027},
		{"unregistered certificate", assertion(t, other.key, map[string]any{"alg": "PS256", "x5t#S256": s256(other.cert)}, goodClaims()), "", 401, 700027},
		{"expired", assertion(t, registered.key, ps, with("exp", time.Now().Add(-time.Minute).Unix())), "", 401, 700024},
		{"no exp", assertion(t, registered.key, ps, with("exp", nil)), "", 401, 700024},
		{"not yet valid", assertion(t, registered.key, ps, with("nbf", time.Now().Add(time.Hour).Unix())), "", 401, 700024},
		{"wrong audience", assertion(t, registered.key, ps, with("aud", "https://login.microsoftonline.com/x/oauth2/v2.0/token")), "", 401, 700212},
		{"wrong issuer", assertion(t, registered.key, ps, with("iss", "someone-else")), "", 401, 700021},
		{"unsupported alg", assertion(t, registered.key, map[string]any{"alg": "HS256", "x5t#S256": s256(registered.cert)}, goodClaims()), "", 401, 700027},
		{"garbage", "a.b", "", 401, 50027},
		{"wrong assertion type", assertion(t, registered.key, ps, goodClaims()), "urn:ietf:params:oauth:client-assertion-type:saml2-bearer", 400, 900144},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := tt.typ
			if typ == "" {
				typ = clientAssertionType
			}
			status, out := e.tokenForm(url.Values{
				"grant_type": {"client_credentials"}, "client_id": {id}, "scope": {"https://graph.microsoft.com/.default"},
				"client_assertion_type": {typ}, "client_assertion": {tt.assert},
			})
			if status != tt.want {
				t.Fatalf("status %d, want %d: %v", status, tt.want, out)
			}
			if tt.want != 200 {
				if codes := out["error_codes"].([]any); codes[0].(float64) != tt.wantCode {
					t.Fatalf("error_codes %v, want %v: %v", codes, tt.wantCode, out["error_description"])
				}
				return
			}
			c, err := verifyHS256(e.srv.tokenKey, out["access_token"].(string))
			if err != nil || c.AppIDACR != "2" {
				t.Fatalf("token claims %+v %v: want appidacr 2 (certificate)", c, err)
			}
		})
	}
}

func TestCertificateCredentialNotConfigured(t *testing.T) {
	cert := newTestCert(t, "c")
	e := newEnv(t, Options{})
	id := e.srv.ClientID()
	now := time.Now().Unix()
	a := assertion(t, cert.key, map[string]any{"alg": "PS256"}, map[string]any{
		"aud": e.srv.AuthorityHost() + e.srv.TenantID() + "/oauth2/v2.0/token", "iss": id, "sub": id, "exp": now + 600})
	status, _ := e.tokenForm(url.Values{"grant_type": {"client_credentials"}, "client_id": {id},
		"scope": {"https://graph.microsoft.com/.default"}, "client_assertion_type": {clientAssertionType}, "client_assertion": {a}})
	if status != 401 {
		t.Fatalf("status %d, want 401 without a registered certificate", status)
	}
	if _, err := Start(Options{ClientCertPEM: []byte("not pem")}); err == nil {
		t.Fatal("Start accepted a ClientCertPEM without certificates")
	}
}
