// Package graphsim is a Microsoft Graph simulator for tests and local runs:
// the Microsoft identity platform token endpoint (client credentials with a
// secret or a certificate assertion, and the discovery documents MSAL
// reads) and the slice of Graph v1.0 that pwsync uses, with Graph's
// synced-user restriction, write throttling and fault injection (before
// the write, or after it: applied, then its answer lost; an effects log
// counts what took effect, whatever was answered):
//
//   - users: get ($select), list ($filter, $top, paging), PATCH (passwordProfile,
//     passwordPolicies, ...), DELETE, revokeSignInSessions, checkMemberGroups,
//     delta query
//   - groups: get, members list, members/$ref add and remove
//   - $batch, each item through the same handlers as a standalone request
//   - subscriptions with the validation handshake, and change notifications
//     (plus lifecycle notifications) delivered to the subscriber
//   - sendMail and Teams sendActivityNotification, with their rate limits
//   - domains (password expiry) and directory/onPremisesSynchronization
//
// Its defaults follow Graph where Graph is less kind than a test would like
// (docs/graph-fidelity.md): delta leaves out never-set properties, expired
// delta tokens answer 400, the flag-only passwordProfile PATCH is a no-op,
// password writes need the app's directory role, $batch answers come back
// shuffled, reads are throttled, notifications arrive late. Options name the
// kinder switches.
//
// It serves HTTPS with its own freshly generated CA, so clients exercise the
// same TLS and URL plumbing they use against graph.microsoft.com. It is pure
// net/http and crypto on purpose: it must not link msgraph-sdk-go.
//
// Files: graphsim.go (server, options), tls.go (CA), auth.go and jwt.go
// (token and discovery endpoints), routes.go (route table, dispatch shared
// by standalone requests and $batch items, standard headers), store.go
// (directory, change tracking), users.go, roles.go (directory roles),
// delta.go, groups.go, batch.go,
// subscriptions.go and notify.go, messaging.go, directory.go, odata.go
// ($select, $filter), throttle.go, faults.go, log.go, errors.go, cmd.go
// (`pwsync graphsim`). A new Graph resource is a handler file plus rows in
// the route table.
package graphsim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by Start to zero Options fields.
const (
	DefaultTenantID      = "00000000-0000-0000-0000-0000000000aa"
	DefaultClientID      = "11111111-1111-1111-1111-111111111111"
	DefaultWriteBudget   = 3000 // Graph identity write quota per app+tenant
	DefaultWriteWindow   = 150 * time.Second
	DefaultTokenLifetime = time.Hour
	// DefaultNotificationDelay is the simulator's change notification
	// latency: real Graph's is minutes; a second keeps tests fast while no
	// test can pass only because a notification arrives with its write.
	DefaultNotificationDelay  = time.Second
	DefaultNotificationRetry  = 4 * time.Hour // Graph retries this long
	DefaultTenantWriteBudget  = 18000         // identity writes per tenant, all apps
	DefaultTenantWriteWindow  = 5 * time.Minute
	DefaultResourceUnitWindow = 10 * time.Second
)

// DefaultDirectoryRoles are the app's directory roles when
// Options.DirectoryRoles is nil: the one README tells operators to assign.
var DefaultDirectoryRoles = []string{RoleUserAdministrator}

// DefaultRoles are the application roles put in issued tokens when
// Options.Roles is nil: what pwsync needs.
var DefaultRoles = []string{
	"User.ReadWrite.All",
	"User-PasswordProfile.ReadWrite.All",
	"User.RevokeSessions.All",
	"GroupMember.ReadWrite.All",
	"Mail.Send",
	"TeamsActivity.Send",
	// risk.enabled (issue 17): riskyUsers and riskDetections, dismiss
	"IdentityRiskyUser.ReadWrite.All",
	"IdentityRiskEvent.Read.All",
}

// Options configure a simulator. The zero value is usable.
type Options struct {
	Addr     string // listen address, default "127.0.0.1:0"
	TenantID string // default DefaultTenantID
	ClientID string // accepted app (client) ID, default DefaultClientID
	// ClientSecret is the accepted secret; if empty any secret is refused.
	ClientSecret string
	// ClientCertPEM optionally holds certificates whose keys sign client
	// assertions (certificate credential). Only RSA keys (RS256/PS256).
	ClientCertPEM []byte
	// WriteBudget is the number of writes allowed per WriteWindow per
	// app+tenant: 0 means DefaultWriteBudget (Graph's documented quota),
	// negative means unlimited.
	WriteBudget int
	WriteWindow time.Duration // default DefaultWriteWindow
	// ForceChangeApplies is kinder than Graph: a PATCH of passwordProfile
	// with forceChangePasswordNextSignIn but no password sets the flags. By
	// default it answers 204 and changes nothing, as reported in
	// microsoftgraph/microsoft-graph-docs#4267.
	ForceChangeApplies bool
	// DirectoryRoles are the Entra directory roles held by the app's
	// service principal (display names, e.g. "User Administrator"); nil
	// means DefaultDirectoryRoles, an empty slice none. App-only
	// passwordProfile writes need one of them (see roles.go).
	DirectoryRoles []string
	// ExpiredDeltaGone answers an expired delta token 410 Gone
	// (resyncRequired), as some Graph resources do, instead of the
	// identity resources' 400 syncStateNotFound.
	ExpiredDeltaGone bool
	// BatchInOrder is kinder than Graph: $batch responses in request order.
	// By default they come back shuffled, as Graph allows.
	BatchInOrder bool
	// ResourceUnitBudget is the identity read quota in resource units per
	// ResourceUnitWindow per app+tenant: 0 means Graph's, by tenant size
	// (3,500 below 50 users, 5,000 up to 500, 8,000 above), negative
	// unlimited. ResourceUnitWindow defaults to 10 s.
	ResourceUnitBudget int
	ResourceUnitWindow time.Duration
	// TenantWriteBudget is the identity write quota per TenantWriteWindow
	// for the tenant, all apps together: 0 means Graph's 18,000, negative
	// unlimited. TenantWriteWindow defaults to 5 minutes. Other apps' share
	// is spent with UseTenantWrites.
	TenantWriteBudget int
	TenantWriteWindow time.Duration
	Latency           time.Duration // added to every Graph request
	TokenLifetime     time.Duration // default DefaultTokenLifetime
	// Roles are the app roles put in issued tokens; nil means DefaultRoles.
	Roles []string
	// Log receives the HTTP server's own errors (TLS handshakes and the
	// like); nil discards them.
	Log io.Writer

	// NotificationClient sends subscription validation requests and change
	// notifications; nil means a client with the system roots. Give it the
	// receiver's CA (an httptest.Server's Client(), say).
	NotificationClient *http.Client
	// NotificationDelay holds each change notification back, as Graph's
	// delivery latency does (for users: under 2 minutes on average, at most
	// 15): 0 means DefaultNotificationDelay, negative sends at once.
	NotificationDelay time.Duration
	// NotificationRetryFor is how long a notification the receiver did not
	// accept is retried, with exponential backoff: 0 means Graph's 4 hours.
	NotificationRetryFor time.Duration
	// AllowHTTPNotificationURL accepts http:// notification URLs. Graph
	// requires https; this is for local receivers without TLS.
	AllowHTTPNotificationURL bool

	// MailPerMinute is the sendMail limit per sending mailbox: 0 means
	// Exchange Online's 30, negative means unlimited.
	MailPerMinute int
	// ActivityPerSecond is the Teams sendActivityNotification limit per app
	// and tenant: 0 means Teams' 5, negative means unlimited.
	ActivityPerSecond int
	// MailWindow and ActivityWindow scale the two limits' windows in time
	// (default a minute and a second): benchmarks run the real limits'
	// shape faster, e.g. 30 messages per 2 s.
	MailWindow, ActivityWindow time.Duration
	// MailRecipientsPerDay is Exchange Online's rolling limit of recipients
	// per sending mailbox: 0 means 10,000, negative means unlimited.
	// MailDayWindow scales its 24 hours.
	MailRecipientsPerDay int
	MailDayWindow        time.Duration
	// MailConcurrency is Outlook's limit of concurrent requests per app per
	// mailbox: 0 means 4, negative means unlimited. A sendMail holds its
	// mailbox's place for MailLatency (Exchange accepting the message; 0:
	// answered at once, so nothing is ever concurrent).
	MailConcurrency int
	MailLatency     time.Duration
}

// Server is a running simulator. All methods are safe for concurrent use.
type Server struct {
	opts     Options
	latency  atomic.Int64 // nanoseconds added to every Graph request (Options.Latency, SetLatency)
	ca       *authority
	listener net.Listener
	http     *http.Server
	url      string
	tokenKey []byte // HMAC key for issued access tokens
	spID     string // object ID of the app's service principal (oid, sub)
	certs    []*x509.Certificate

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: ends hanging faults

	budget        *windowLimit // identity writes; has its own lock
	mailLimit     *windowLimit // per mailbox
	mailDay       *windowLimit // recipients per mailbox and rolling day
	activityLimit *windowLimit // Teams activity notifications
	notifier      *notifier    // has its own lock
	tenantWrites  *windowLimit // identity writes of all apps of the tenant
	resourceUnits *windowLimit // identity resource units per app+tenant; limit set per request
	risk          riskState    // Identity Protection (risk.go); has its own lock

	mu           sync.Mutex // guards the fields below
	store        *store
	noop         bool
	deltaGen     uint64 // bumped by ExpireDeltaTokens
	dirRoles     []string
	subs         map[string]*subscription
	mail         []Mail
	activities   []ActivityNotification
	mailInFlight map[string]int     // sendMail requests being accepted, per mailbox
	noTeamsApp   map[string]bool    // user IDs without pwsync's Teams app
	domains      map[string]*Domain // by lower-cased name
	syncFeatures map[string]bool
	faults       []*Fault
	requests     []Request
	effects      []Effect // requests that took effect (faults.go)
	onReq        func(Request)
	stats        Stats
}

// SetLatency changes the latency added to every Graph request
// (Options.Latency) while the simulator runs, e.g. between a benchmark's
// phases.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// Start listens on opts.Addr and serves until Close.
func Start(opts Options) (*Server, error) {
	opts = withDefaults(opts)
	s := &Server{
		opts:          opts,
		tokenKey:      randomBytes(32),
		spID:          newGUID(),
		closing:       make(chan struct{}),
		store:         newStore(),
		noop:          !opts.ForceChangeApplies,
		dirRoles:      opts.DirectoryRoles,
		budget:        newWindowLimit(opts.WriteBudget, opts.WriteWindow),
		tenantWrites:  newWindowLimit(limitOrDefault(opts.TenantWriteBudget, DefaultTenantWriteBudget), durationOr(opts.TenantWriteWindow, DefaultTenantWriteWindow)),
		resourceUnits: newWindowLimit(0, durationOr(opts.ResourceUnitWindow, DefaultResourceUnitWindow)),
		notifier:      newNotifier(opts.NotificationClient, opts.NotificationDelay, opts.NotificationRetryFor),
		subs:          map[string]*subscription{},
		noTeamsApp:    map[string]bool{},
		mailLimit:     newWindowLimit(limitOrDefault(opts.MailPerMinute, defaultMailPerMinute), durationOr(opts.MailWindow, time.Minute)),
		mailDay:       newWindowLimit(limitOrDefault(opts.MailRecipientsPerDay, defaultMailRecipientsPerDay), durationOr(opts.MailDayWindow, 24*time.Hour)),
		mailInFlight:  map[string]int{},
		activityLimit: newWindowLimit(limitOrDefault(opts.ActivityPerSecond, defaultActivityPerSecond), durationOr(opts.ActivityWindow, time.Second)),
		stats:         Stats{ByStatus: map[int]int{}},
	}
	s.latency.Store(int64(opts.Latency))
	s.store.onChange = s.userChanged
	s.domains, s.syncFeatures = defaultDirectory()
	if len(opts.ClientCertPEM) > 0 {
		certs, err := parseClientCerts(opts.ClientCertPEM)
		if err != nil {
			return nil, fmt.Errorf("graphsim: client certificate: %w", err)
		}
		s.certs = certs
	}
	ca, err := newAuthority()
	if err != nil {
		return nil, fmt.Errorf("graphsim: %w", err)
	}
	s.ca = ca
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("graphsim: listen %s: %w", opts.Addr, err)
	}
	s.listener = ln
	s.url = "https://" + urlHost(ln.Addr())
	errLog := opts.Log
	if errLog == nil {
		errLog = io.Discard // clients that do not trust the CA would spam stderr
	}
	s.http = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{ca.serverCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(errLog, "graphsim: ", 0),
	}
	go s.notifier.run(s.closing)
	go func() {
		// ServeTLS returns ErrServerClosed after Close; nothing else to report.
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(errLog, "graphsim: serve: %v\n", err)
		}
	}()
	return s, nil
}

// limitOrDefault maps an Options limit to windowLimit's: 0 is the
// documented default, negative is unlimited (windowLimit's 0).
func limitOrDefault(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

func withDefaults(o Options) Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.TenantID == "" {
		o.TenantID = DefaultTenantID
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	o.WriteBudget = limitOrDefault(o.WriteBudget, DefaultWriteBudget)
	if o.WriteWindow <= 0 {
		o.WriteWindow = DefaultWriteWindow
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = DefaultTokenLifetime
	}
	if o.Roles == nil {
		o.Roles = DefaultRoles
	}
	if o.DirectoryRoles == nil {
		o.DirectoryRoles = DefaultDirectoryRoles
	}
	switch {
	case o.NotificationDelay == 0:
		o.NotificationDelay = DefaultNotificationDelay
	case o.NotificationDelay < 0:
		o.NotificationDelay = 0
	}
	if o.NotificationRetryFor <= 0 {
		o.NotificationRetryFor = DefaultNotificationRetry
	}
	return o
}

// urlHost formats a listener address for a URL; an unspecified address
// (":0", "0.0.0.0") is reached through 127.0.0.1, which the certificate names.
func urlHost(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// Close stops the server and ends hanging requests. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		// Not Shutdown: its HTTP/2 GOAWAY grace costs a second per server,
		// and a simulator owes its clients no graceful goodbye.
		_ = s.http.Close() // the only error is the listener's, already closed or not
	})
}

// URL is the server's root, "https://127.0.0.1:PORT".
func (s *Server) URL() string { return s.url }

// GraphBaseURL is the Graph root to configure in clients, URL()+"/v1.0".
func (s *Server) GraphBaseURL() string { return s.url + "/v1.0" }

// AuthorityHost is the login authority host, URL()+"/"; the token endpoint
// is {AuthorityHost}{tenant}/oauth2/v2.0/token.
func (s *Server) AuthorityHost() string { return s.url + "/" }

// TenantID is the simulated tenant.
func (s *Server) TenantID() string { return s.opts.TenantID }

// ClientID is the accepted application (client) ID.
func (s *Server) ClientID() string { return s.opts.ClientID }

// CACertPEM is the PEM of the CA that signed the server certificate.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.ca.certPEM...) }

// WriteCAFile writes CACertPEM to path (mode 0644: it is public).
func (s *Server) WriteCAFile(path string) error {
	if err := os.WriteFile(path, s.ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("graphsim: write CA file: %w", err)
	}
	return nil
}

// HTTPClient returns a client that trusts the simulator's CA. It has no
// timeout so that tests control hangs with contexts.
func (s *Server) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.cert)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		Proxy:             nil, // never send the simulator's traffic through a proxy
	}}
}

// SetForceChangeNoop switches the documented-bug behaviour of a
// passwordProfile PATCH without a password (on by default; see
// Options.ForceChangeApplies).
func (s *Server) SetForceChangeNoop(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noop = on
}

// SetWriteBudget changes the write quota: n writes per window; n <= 0 means
// unlimited, window <= 0 keeps DefaultWriteWindow. Writes already made in
// the current window still count.
func (s *Server) SetWriteBudget(n int, window time.Duration) {
	if window <= 0 {
		window = DefaultWriteWindow
	}
	s.budget.set(max(n, 0), window)
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
