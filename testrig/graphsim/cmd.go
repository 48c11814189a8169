package graphsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
)

// Seed is the -seed file: users and groups to preload. Users use Graph's
// property names (see User); accountEnabled defaults to true.
type Seed struct {
	Users  []SeedUser  `json:"users"`
	Groups []SeedGroup `json:"groups"`
}

// SeedUser is a User whose accountEnabled may be left out (then true).
type SeedUser struct {
	User
	AccountEnabled *bool `json:"accountEnabled"`
}

// SeedGroup is a group and its members (user IDs or userPrincipalNames).
type SeedGroup struct {
	ID          string   `json:"id"`
	DisplayName string   `json:"displayName"`
	Members     []string `json:"members"`
}

// Main runs `pwsync graphsim`: a simulator until SIGINT or SIGTERM.
func Main(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout)
}

// run is Main until ctx ends, so that tests can stop it.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("graphsim", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		opts   Options
		caOut  = fs.String("ca-out", "", "write the CA certificate (PEM) to this file (default: a file in the temp dir)")
		seed   = fs.String("seed", "", "JSON file of users and groups to preload: {\"users\":[...],\"groups\":[{\"id\",\"displayName\",\"members\"}]}")
		budget = fs.Int("write-budget", DefaultWriteBudget, "writes allowed per write window per app+tenant; 0 = unlimited")
	)
	fs.StringVar(&opts.Addr, "addr", "127.0.0.1:0", "listen address")
	fs.StringVar(&opts.ClientID, "client-id", DefaultClientID, "accepted application (client) ID")
	fs.StringVar(&opts.ClientSecret, "client-secret", "", "accepted client secret (empty: every secret is refused)")
	fs.StringVar(&opts.TenantID, "tenant", DefaultTenantID, "tenant ID")
	fs.DurationVar(&opts.WriteWindow, "write-window", DefaultWriteWindow, "write budget window")
	fs.BoolVar(&opts.ForceChangeApplies, "force-change-applies", false, "kinder than Graph: a passwordProfile PATCH without password sets the flag (default: 204 and nothing changes, microsoft-graph-docs#4267)")
	fs.BoolVar(&opts.ExpiredDeltaGone, "expired-delta-gone", false, "an expired delta token answers 410 resyncRequired (default: 400 syncStateNotFound)")
	fs.BoolVar(&opts.BatchInOrder, "batch-in-order", false, "kinder than Graph: $batch responses in request order (default: shuffled)")
	fs.DurationVar(&opts.Latency, "latency", 0, "latency added to every Graph request")
	fs.DurationVar(&opts.TokenLifetime, "token-lifetime", DefaultTokenLifetime, "access token lifetime")
	fs.IntVar(&opts.MailPerMinute, "mail-per-minute", defaultMailPerMinute, "sendMail limit per mailbox; negative = unlimited")
	fs.IntVar(&opts.MailRecipientsPerDay, "mail-recipients-per-day", defaultMailRecipientsPerDay, "sendMail recipients per mailbox and rolling day; negative = unlimited")
	fs.IntVar(&opts.MailConcurrency, "mail-concurrency", defaultMailConcurrency, "concurrent sendMail requests per mailbox; negative = unlimited")
	fs.DurationVar(&opts.MailLatency, "mail-latency", 0, "how long a sendMail holds its mailbox's concurrency place")
	fs.IntVar(&opts.ActivityPerSecond, "activity-per-second", defaultActivityPerSecond, "Teams activity notifications per second; negative = unlimited")
	fs.DurationVar(&opts.NotificationDelay, "notification-delay", DefaultNotificationDelay, "delay before each change notification is sent; negative = at once")
	fs.BoolVar(&opts.AllowHTTPNotificationURL, "allow-http-notify", false, "accept http:// notification URLs (Graph requires https)")
	logRequests := fs.Bool("log-requests", false, "print one line per Graph request: time, method, path, status (bodies never)")
	certFile := fs.String("client-cert", "", "PEM file of the certificate accepted for client assertions")
	notifyCA := fs.String("notify-ca", "", "PEM file of extra CAs trusted for notification URLs")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("graphsim: %w", err)
	}
	if *notifyCA != "" {
		client, err := clientTrusting(*notifyCA)
		if err != nil {
			return err
		}
		opts.NotificationClient = client
	}
	opts.WriteBudget = *budget
	if *budget == 0 {
		opts.WriteBudget = -1 // Options' spelling of unlimited
	}
	if *certFile != "" {
		pemBytes, err := os.ReadFile(*certFile)
		if err != nil {
			return fmt.Errorf("graphsim: read client certificate: %w", err)
		}
		opts.ClientCertPEM = pemBytes
	}
	var sd Seed
	if *seed != "" {
		var err error
		if sd, err = readSeed(*seed); err != nil {
			return err
		}
	}

	srv, err := Start(opts)
	if err == nil && *logRequests {
		var mu sync.Mutex
		srv.OnRequest(func(r Request) {
			if r.Status == 0 || (r.BatchID != "" && r.ItemID == "") {
				return // a hang starting, or the outer $batch POST (its items print on their own)
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(stdout, "%s %s %d %s\n", r.Method, r.Path, r.Status, r.Time.UTC().Format("15:04:05.000"))
		})
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.LoadSeed(sd); err != nil {
		return err
	}
	path := *caOut
	if path == "" {
		path = filepath.Join(os.TempDir(), fmt.Sprintf("graphsim-ca-%d.pem", os.Getpid()))
	}
	if err := srv.WriteCAFile(path); err != nil {
		return err
	}
	if opts.ClientSecret == "" && len(opts.ClientCertPEM) == 0 {
		fmt.Fprintln(stdout, "# warning: no -client-secret or -client-cert: every token request is refused")
	}
	fmt.Fprintf(stdout, "graph_base_url=%s\nauthority_host=%s\ntenant_id=%s\nclient_id=%s\nca_file=%s\n",
		srv.GraphBaseURL(), srv.AuthorityHost(), srv.TenantID(), srv.ClientID(), path)
	<-ctx.Done()
	return nil
}

// clientTrusting is an HTTP client that trusts the system roots and the
// CAs in a PEM file.
func clientTrusting(pemFile string) (*http.Client, error) {
	b, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, fmt.Errorf("graphsim: read notify CA: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots here: the file's alone
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("graphsim: no certificate in %s", pemFile)
	}
	return &http.Client{Timeout: deliveryTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

func readSeed(path string) (Seed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Seed{}, fmt.Errorf("graphsim: read seed: %w", err)
	}
	var sd Seed
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // a typo in a seed should not silently drop a user's property
	if err := dec.Decode(&sd); err != nil {
		return Seed{}, fmt.Errorf("graphsim: parse seed %s: %w", path, err)
	}
	return sd, nil
}

// LoadSeed preloads users and groups; members name users by ID or UPN.
func (s *Server) LoadSeed(sd Seed) error {
	for _, su := range sd.Users {
		u := su.User
		u.AccountEnabled = su.AccountEnabled == nil || *su.AccountEnabled
		if u.UserPrincipalName == "" {
			return errors.New("graphsim: seed user without userPrincipalName")
		}
		s.PutUser(u)
	}
	for _, g := range sd.Groups {
		if g.ID == "" {
			return fmt.Errorf("graphsim: seed group %q without id", g.DisplayName)
		}
		s.PutGroup(g.ID, g.DisplayName)
		for _, m := range g.Members {
			if err := s.AddGroupMember(g.ID, m); err != nil {
				return fmt.Errorf("graphsim: seed: %w", err)
			}
		}
	}
	return nil
}
