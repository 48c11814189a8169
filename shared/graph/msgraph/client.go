// Package msgraph implements graph.Client over msgraph-sdk-go. It is the only
// package in pwsync that links the SDK (a slow, memory-hungry build), so that
// every other test binary stays small.
//
// Everything that differs between Microsoft's cloud, national clouds and the
// project's simulator is configurable: login authority, Graph base URL and an
// extra CA bundle. Retries are deliberately NOT done here: the actuator owns
// them (backoff + JetStream redelivery), so the SDK's retry middleware is
// removed and every Graph answer comes back as one *graph.Error.
package msgraph

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	khttp "github.com/microsoft/kiota-http-go"
	msgraphsdk "github.com/microsoftgraph/msgraph-sdk-go"
	msgraphcore "github.com/microsoftgraph/msgraph-sdk-go-core"
	"github.com/microsoftgraph/msgraph-sdk-go-core/authentication"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/graph/tokencache"
	"github.com/pwsync/pwsync/shared/metrics"
)

// Defaults for Microsoft's public cloud.
const (
	DefaultAuthorityHost = "https://login.microsoftonline.com/"
	DefaultGraphBaseURL  = "https://graph.microsoft.com/v1.0"
	DefaultTimeout       = 30 * time.Second
)

// Config says how to reach Graph and how to authenticate (client credentials).
type Config struct {
	TenantID string
	ClientID string

	// Exactly one of ClientSecret and CertificateFile.
	ClientSecret string
	// CertificateFile holds the certificate and its private key, PEM or
	// PKCS#12; CertificatePassword decrypts it if needed.
	CertificateFile     string
	CertificatePassword string

	AuthorityHost string // default DefaultAuthorityHost
	GraphBaseURL  string // default DefaultGraphBaseURL
	// CAFile is an extra PEM CA bundle trusted (besides the system roots)
	// for both the token endpoint and Graph: simulator, TLS-inspecting proxy.
	CAFile  string
	Timeout time.Duration // per HTTP request, default DefaultTimeout
}

// Client is graph.Client over msgraph-sdk-go. Safe for concurrent use.
type Client struct {
	tr      *http.Transport // shared by the credential and Graph
	sdk     *msgraphsdk.GraphServiceClient
	adapter *msgraphsdk.GraphRequestAdapter
	cred    azcore.TokenCredential
	// stopKeep stops the background token renewal (Close).
	stopKeep func()
	scopes   []string
	baseURL  string // without trailing slash, e.g. https://graph.microsoft.com/v1.0
}

var _ graph.Client = (*Client)(nil)

// New validates cfg and builds the credential and the SDK client, and starts
// renewing the token in the background (until Close). A wrong secret shows
// up on the first call (or Token).
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tr, err := newTransport(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(cfg.GraphBaseURL) // validated by setDefaults
	scopes := []string{scopeFor(base.Hostname())}

	inner, err := newCredential(cfg, &http.Client{Transport: tr, Timeout: cfg.Timeout})
	if err != nil {
		return nil, err
	}
	// The token is renewed in the background ahead of expiry (until
	// Close): no Graph request waits for the token endpoint.
	cred := tokencache.New(inner, scopes, 0)

	// The SDK's convenience constructor only attaches tokens for Microsoft's
	// Graph hosts; name the configured host so the simulator/proxy gets one too.
	auth, err := authentication.NewAzureIdentityAuthenticationProviderWithScopesAndValidHosts(cred, scopes, []string{base.Hostname()})
	if err != nil {
		return nil, fmt.Errorf("graph: auth provider: %w", err)
	}
	httpClient := &http.Client{
		// Under the SDK's middleware: every HTTP exchange with Graph is timed
		// once (token requests are not Graph calls and are not counted).
		Transport: khttp.NewCustomTransportWithParentTransport(metrics.GraphTransport(tr), middlewares()...),
		Timeout:   cfg.Timeout,
		// The redirect middleware follows redirects itself (and drops the
		// token on a host change); net/http must not follow them as well.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	adapter, err := msgraphsdk.NewGraphRequestAdapterWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(auth, nil, nil, httpClient)
	if err != nil {
		return nil, fmt.Errorf("graph: request adapter: %w", err)
	}
	// Before NewGraphServiceClient: set afterwards, $batch items would keep
	// https://graph.microsoft.com URLs.
	adapter.SetBaseUrl(cfg.GraphBaseURL)
	keepCtx, stopKeep := context.WithCancel(context.Background())
	keepDone := make(chan struct{})
	go func() { defer close(keepDone); cred.Run(keepCtx) }()
	return &Client{
		tr:      tr,
		sdk:     msgraphsdk.NewGraphServiceClient(adapter),
		adapter: adapter,
		cred:    cred,
		stopKeep: func() {
			stopKeep()
			<-keepDone
		},
		scopes:  scopes,
		baseURL: cfg.GraphBaseURL,
	}, nil
}

// Close releases idle connections (HTTP/2 included, which a server shutting
// down would otherwise wait on). The Client must not be used afterwards.
func (c *Client) Close() {
	c.stopKeep()
	c.tr.CloseIdleConnections()
}

func (cfg *Config) setDefaults() error {
	switch {
	case cfg.TenantID == "":
		return errors.New("graph.tenant_id is required")
	case cfg.ClientID == "":
		return errors.New("graph.client_id is required")
	case cfg.ClientSecret == "" && cfg.CertificateFile == "":
		return errors.New("graph.client_secret (or graph.certificate_file) is required")
	case cfg.ClientSecret != "" && cfg.CertificateFile != "":
		return errors.New("graph.certificate_file: set either graph.client_secret or graph.certificate_file, not both")
	case cfg.Timeout < 0:
		return errors.New("graph.timeout must not be negative")
	}
	if cfg.AuthorityHost == "" {
		cfg.AuthorityHost = DefaultAuthorityHost
	}
	if cfg.GraphBaseURL == "" {
		cfg.GraphBaseURL = DefaultGraphBaseURL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	// Tokens and passwords travel on these connections: HTTPS only.
	if err := checkHTTPS(cfg.AuthorityHost); err != nil {
		return fmt.Errorf("graph.authority_host: %w", err)
	}
	if err := checkHTTPS(cfg.GraphBaseURL); err != nil {
		return fmt.Errorf("graph.base_url: %w", err)
	}
	cfg.GraphBaseURL = strings.TrimRight(cfg.GraphBaseURL, "/")
	return nil
}

func checkHTTPS(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("invalid URL: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("must be an https:// URL (got %q)", raw)
	}
	return nil
}

// newTransport is shared by azidentity and Graph so that both trust the same
// CAs and share connection pools.
func newTransport(caFile string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("graph.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // e.g. no system store: the bundle alone
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("graph.ca_file: no PEM certificate in %s", caFile)
	}
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}

// middlewares is the SDK's default pipeline (telemetry, /me replacement,
// redirect, request compression, parameter decoding, user agent, header
// inspection) minus the retry handler: the actuator owns retries, and two
// layers of retries would multiply the load on a throttled tenant.
// (RetryHandlerOptions{MaxRetries: 0} would not do: 0 means "default, 3".)
func middlewares() []khttp.Middleware {
	opts := msgraphsdk.GetDefaultClientOptions()
	all := msgraphcore.GetDefaultMiddlewaresWithOptions(&opts)
	out := make([]khttp.Middleware, 0, len(all))
	for _, m := range all {
		switch m.(type) {
		case *khttp.RetryHandler, khttp.RetryHandler:
			continue
		}
		out = append(out, m)
	}
	return out
}

func newCredential(cfg Config, hc *http.Client) (azcore.TokenCredential, error) {
	authority, _ := url.Parse(cfg.AuthorityHost)
	opts := azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost},
		Transport: hc,
		// No hidden retries of the token request either (azcore would spend
		// ~10 s retrying an unreachable endpoint inside one Graph call): the
		// actuator's backoff sees the failure and owns the retry.
		Retry: policy.RetryOptions{MaxRetries: -1},
	}
	// MSAL validates unknown authorities by asking login.microsoftonline.com,
	// which fails for a simulator or a disconnected cloud.
	noDiscovery := !microsoftAuthorities[strings.ToLower(authority.Hostname())]

	if cfg.ClientSecret != "" {
		cred, err := azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: noDiscovery})
		if err != nil {
			return nil, fmt.Errorf("graph: client secret credential: %w", err)
		}
		return cred, nil
	}
	data, err := os.ReadFile(cfg.CertificateFile)
	if err != nil {
		return nil, fmt.Errorf("graph.certificate_file: %w", err)
	}
	var pw []byte
	if cfg.CertificatePassword != "" {
		pw = []byte(cfg.CertificatePassword)
	}
	certs, key, err := azidentity.ParseCertificates(data, pw)
	if err != nil {
		// ParseCertificates' errors name no secret material.
		return nil, fmt.Errorf("graph.certificate_file %s: %w", cfg.CertificateFile, err)
	}
	cred, err := azidentity.NewClientCertificateCredential(cfg.TenantID, cfg.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: noDiscovery})
	if err != nil {
		return nil, fmt.Errorf("graph: client certificate credential: %w", err)
	}
	return cred, nil
}

// microsoftAuthorities are login hosts MSAL knows without instance discovery.
var microsoftAuthorities = map[string]bool{
	"login.microsoftonline.com":        true,
	"login.microsoft.com":              true,
	"login.windows.net":                true,
	"login.microsoftonline.us":         true,
	"login.chinacloudapi.cn":           true,
	"login.partner.microsoftonline.cn": true,
	"login.microsoftonline.de":         true,
}

// scopeFor returns the .default scope of a national cloud's own Graph host;
// anything else (simulator, proxy) asks for the public cloud's audience,
// which is what such stand-ins expect.
func scopeFor(graphHost string) string {
	switch h := strings.ToLower(graphHost); h {
	case "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn":
		return "https://" + h + "/.default"
	}
	return "https://graph.microsoft.com/.default"
}
