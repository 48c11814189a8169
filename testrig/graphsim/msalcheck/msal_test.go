// Package msalcheck proves that the real token stack pwsync uses (azidentity
// over MSAL for Go) works against the simulator, and records what it asks
// for. It is a separate package so that graphsim's own test binary does not
// link azidentity.
package msalcheck

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/pwsync/pwsync/testrig/graphsim"
)

// recorder is an azcore Transporter that logs what the credential requests.
type recorder struct {
	hc   *http.Client
	mu   sync.Mutex
	seen []string
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	return r.hc.Do(req)
}

func clientOptions(srv *graphsim.Server, rec *recorder) azcore.ClientOptions {
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: srv.AuthorityHost()},
		Transport: rec,
	}
}

// useToken checks the token on a Graph call.
func useToken(t *testing.T, srv *graphsim.Server, tok azcore.AccessToken) {
	t.Helper()
	srv.PutUser(graphsim.User{ID: "eeeeeeee-0000-0000-0000-000000000005", UserPrincipalName: "msal@contoso.com"})
	req, _ := http.NewRequest("GET", srv.GraphBaseURL()+"/users/msal@contoso.com", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := srv.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Graph call with the MSAL token: %d", resp.StatusCode)
	}
	if time.Until(tok.ExpiresOn) < 50*time.Minute {
		t.Fatalf("ExpiresOn %v: expires_in not honoured", tok.ExpiresOn)
	}
}

func wantSeen(t *testing.T, rec *recorder, tenant string) {
	t.Helper()
	want := []string{
		"GET /" + tenant + "/v2.0/.well-known/openid-configuration",
		"POST /" + tenant + "/oauth2/v2.0/token",
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.seen, want) {
		t.Fatalf("MSAL requested %q, want %q", rec.seen, want)
	}
}

var scopes = policy.TokenRequestOptions{Scopes: []string{"https://graph.microsoft.com/.default"}}

func TestClientSecretCredential(t *testing.T) {
	srv, err := graphsim.Start(graphsim.Options{ClientSecret: "msal-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tests := []struct {
		name, secret string
		wantErr      bool
	}{
		{"right secret", "msal-secret", false},
		{"wrong secret", "wrong", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{hc: srv.HTTPClient()}
			cred, err := azidentity.NewClientSecretCredential(srv.TenantID(), srv.ClientID(), tt.secret,
				&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv, rec), DisableInstanceDiscovery: true})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := cred.GetToken(context.Background(), scopes)
			if tt.wantErr {
				if err == nil {
					t.Fatal("GetToken succeeded with a wrong secret")
				}
				return
			}
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			wantSeen(t, rec, srv.TenantID())
			useToken(t, srv, tok)
		})
	}
}

func TestClientCertificateCredential(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "pwsync"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), certPEM...)

	srv, err := graphsim.Start(graphsim.Options{ClientCertPEM: certPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	certs, pk, err := azidentity.ParseCertificates(bundle, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sendChain := range []bool{false, true} {
		rec := &recorder{hc: srv.HTTPClient()}
		cred, err := azidentity.NewClientCertificateCredential(srv.TenantID(), srv.ClientID(), certs, pk,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: clientOptions(srv, rec), DisableInstanceDiscovery: true, SendCertificateChain: sendChain})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cred.GetToken(context.Background(), scopes)
		if err != nil {
			t.Fatalf("GetToken (x5c %v): %v", sendChain, err)
		}
		wantSeen(t, rec, srv.TenantID())
		useToken(t, srv, tok)
	}
}
