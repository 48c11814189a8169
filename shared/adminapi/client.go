package adminapi

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
	"net/url"
	"os"
	"strings"
	"time"
)

// Environment variables the CLI reads when the flags are not given.
const (
	EnvURL   = "PWSYNC_ADMIN_URL"
	EnvToken = "PWSYNC_ADMIN_TOKEN"
	EnvCA    = "PWSYNC_ADMIN_CA"
)

// Client calls the admin API for CLI commands.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("admin api: %d %s", e.Status, e.Message) }

// NewClient returns a client for baseURL (https://host:port). token may be
// `file:PATH` (read from the file) or `env:NAME`. caFile, when set, is the CA
// that signed the admin listener's certificate (else the system roots).
func NewClient(baseURL, token, caFile string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("admin url: must be https://host:port (got %q)", baseURL)
	}
	tok, err := resolveToken(token)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("admin ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin ca file %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &Client{base: u, token: tok, http: &http.Client{Transport: tr}}, nil
}

func resolveToken(t string) (string, error) {
	switch {
	case strings.HasPrefix(t, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(t, "file:"))
		if err != nil {
			return "", fmt.Errorf("reading admin token: %w", err)
		}
		t = strings.TrimSpace(string(b))
	case strings.HasPrefix(t, "env:"):
		t = strings.TrimSpace(os.Getenv(strings.TrimPrefix(t, "env:")))
	}
	if t == "" {
		return "", errors.New("admin token: required (--token, " + EnvToken + "; file:PATH allowed)")
	}
	return t, nil
}

// Do sends in as JSON (nil: no body) and decodes a 2xx JSON answer into out
// (nil: discarded; an io.Writer: the raw body is copied to it, e.g. CSV).
// Non-2xx answers are *APIError with the server's message.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.Raw(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch o := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	case io.Writer:
		if _, err := io.Copy(o, resp.Body); err != nil {
			return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
		}
		return nil
	default:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
		return nil
	}
}

// Raw sends a request and returns a 2xx response whose body the caller
// closes (streams such as /api/v1/live); other statuses are *APIError.
func (c *Client) Raw(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, &APIError{Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

// ClientFlags are the admin connection flags every CLI command shares:
// --admin-url, --token, --ca-file, falling back to PWSYNC_ADMIN_URL,
// PWSYNC_ADMIN_TOKEN and PWSYNC_ADMIN_CA.
type ClientFlags struct {
	URL, Token, CAFile string
	Timeout            time.Duration
}

// BindClientFlags registers the flags on fs.
func BindClientFlags(fs *flag.FlagSet) *ClientFlags {
	f := &ClientFlags{}
	fs.StringVar(&f.URL, "admin-url", "", "admin API URL, e.g. https://127.0.0.1:8444 (or "+EnvURL+")")
	fs.StringVar(&f.Token, "token", "", "admin token, or file:PATH (or "+EnvToken+")")
	fs.StringVar(&f.CAFile, "ca-file", "", "CA that signed the admin API certificate (or "+EnvCA+")")
	return f
}

// Client builds the client from the flags and the environment.
func (f *ClientFlags) Client(getenv func(string) string) (*Client, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	pick := func(flagVal, env string) string {
		if flagVal != "" {
			return flagVal
		}
		return getenv(env)
	}
	u := pick(f.URL, EnvURL)
	if u == "" {
		return nil, errors.New("admin url: required (--admin-url or " + EnvURL + ")")
	}
	return NewClient(u, pick(f.Token, EnvToken), pick(f.CAFile, EnvCA))
}

// HTTPClient is the client's *http.Client (its TLS settings), for streams.
func HTTPClient(c *Client) *http.Client { return c.http }
