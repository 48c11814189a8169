package adminapi

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/events"
)

// Config is the admin listener's configuration (config.Admin, resolved).
type Config struct {
	Listen string
	// TLSCert and TLSKey: PEM files. Without them the server refuses to
	// start unless AllowPlain is set and Listen is a loopback address (a
	// local reverse proxy or an SSH tunnel in front).
	TLSCert, TLSKey string
	AllowPlain      bool
	MaxBody         int64 // request body limit; 0 = 1 MiB
	Tokens          []Token
}

// Auditor is the part of audit.Writer the server needs.
type Auditor interface {
	Write(ctx context.Context, r events.AuditRecord) error
}

// Deps are the server's collaborators.
type Deps struct {
	Audit Auditor
	Log   zerolog.Logger
	Now   func() time.Time // nil: time.Now
}

// Server is the admin API. Register routes with Handle before Run.
type Server struct {
	cfg    Config
	deps   Deps
	tokens tokenSet
	tls    *tls.Config
	mux    *http.ServeMux

	mu sync.Mutex
	ln net.Listener
}

// New checks the configuration and loads the TLS key pair.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Audit == nil {
		return nil, errors.New("admin api: an audit writer is required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	ts, err := newTokenSet(cfg.Tokens)
	if err != nil {
		return nil, fmt.Errorf("admin.tokens: %w", err)
	}
	if len(cfg.Tokens) == 0 {
		return nil, errors.New("admin.tokens: at least one token is required")
	}
	s := &Server{cfg: cfg, deps: deps, tokens: ts, mux: http.NewServeMux()}
	switch {
	case cfg.TLSCert != "" || cfg.TLSKey != "":
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("admin.tls_cert/tls_key: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	case !cfg.AllowPlain:
		return nil, errors.New("admin.tls_cert: TLS is required (set tls_cert and tls_key, or allow_plain: true on a loopback listen address)")
	case !IsLoopback(cfg.Listen):
		return nil, fmt.Errorf("admin.allow_plain: only allowed on a loopback listen address (got %q)", cfg.Listen)
	}
	return s, nil
}

// IsLoopback reports whether a host:port listens on loopback only.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handle registers h for a Go ServeMux pattern ("POST /api/v1/campaigns/{id}/approve")
// that needs at least role. Authentication has happened before h runs;
// PrincipalFrom(r.Context()) is the caller.
func (s *Server) Handle(pattern string, role Role, h http.Handler) {
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		if !p.Has(role) {
			Error(w, http.StatusForbidden, fmt.Sprintf("%s role required", role))
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(pattern string, role Role, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(pattern, role, http.HandlerFunc(h))
}

// HandlePublic serves h without authentication: only for static assets that
// hold no data (the console's HTML, CSS and JS, which then call the API with
// a token). Successful GETs of it are not audited; everything else is.
func (s *Server) HandlePublic(pattern string, h http.Handler) {
	s.mux.Handle(pattern, publicHandler{h})
}

type publicHandler struct{ http.Handler }

// Handler is the whole API with authentication, limits and audit (tests
// and embedding).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	start := s.deps.Now()
	rec := &statusWriter{ResponseWriter: w}
	w = rec
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	var p Principal
	h, pattern := s.mux.Handler(r)
	_, public := h.(publicHandler)
	defer func() {
		if public && rec.status < 400 && r.Method == http.MethodGet {
			return
		}
		s.audit(r, p, rec.code(), s.deps.Now().Sub(start))
	}()

	if !public {
		var err error
		p, err = s.tokens.authenticate(r.Header.Get("Authorization"), s.deps.Now())
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pwsync-admin"`)
			Error(w, http.StatusUnauthorized, err.Error())
			return
		}
		r = r.WithContext(WithPrincipal(r.Context(), p))
	}
	if r.ContentLength > s.cfg.MaxBody {
		Error(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	if pattern == "" { // the mux's own 404/405, answered as JSON
		probe := &headerProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if a := probe.header.Get("Allow"); a != "" {
			w.Header().Set("Allow", a)
		}
		Error(w, probe.status, strings.ToLower(http.StatusText(probe.status)))
		return
	}
	s.mux.ServeHTTP(w, r) // (again) so that r carries the path values
}

// headerProbe captures what the mux's not-found / not-allowed handler says.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header { return p.header }
func (p *headerProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *headerProbe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// audit writes one record per request; a failure to write it is logged
// loudly (the answer has already gone out).
func (s *Server) audit(r *http.Request, p Principal, status int, took time.Duration) {
	outcome := "ok"
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		outcome = "denied"
	case status >= 500:
		outcome = "error"
	case status >= 400:
		outcome = "rejected"
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	rec := events.AuditRecord{
		Kind: events.KindAdmin, EventID: "admin." + hex.EncodeToString(id), Outcome: outcome, HTTPStatus: status,
		Detail: r.Method + " " + r.URL.Path,
		Admin: &events.AdminRequest{Principal: p.Name, Roles: p.rolesString(), Method: r.Method, Path: r.URL.Path,
			Status: status, Remote: r.RemoteAddr, DurationMS: float64(took.Microseconds()) / 1000},
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.deps.Audit.Write(ctx, rec); err != nil {
		s.deps.Log.Error().Err(err).Str("principal", p.Name).Str("method", r.Method).Str("path", r.URL.Path).
			Int("status", status).Msg("admin request not audited")
	}
}

// Listen binds the listener (Run calls it when needed); tests use it with
// port 0 and Addr.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen %s: %w", s.cfg.Listen, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the base URL clients use (after Listen).
func (s *Server) URL() string {
	scheme := "https"
	if s.tls == nil {
		scheme = "http"
	}
	return scheme + "://" + s.Addr()
}

// Run serves until ctx ends, then lets in-flight requests finish for up to
// 5 s (long-lived streams see their request context end first).
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// TLS handshake noise (scanners, plain HTTP) at debug level.
		ErrorLog: stdlog.New(debugWriter{s.deps.Log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	s.deps.Log.Info().Str("addr", s.Addr()).Bool("tls", s.tls != nil).Msg("admin api listening")
	select {
	case err := <-errc:
		return fmt.Errorf("admin api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin api: %w", err)
	}
	return nil
}

// statusWriter remembers the status and passes Flush through (SSE).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// debugWriter puts net/http's own error log at debug level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Str("component", "admin_http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
