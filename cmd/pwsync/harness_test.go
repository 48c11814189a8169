package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/logx"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

// The test binary doubles as the pwsync binary, so that end-to-end tests can
// kill -9 a real process without a second slow link of the Graph SDK.
func TestMain(m *testing.M) {
	natstest.ServeNodeIfChild() // a node of RunClusterProcesses (scale-out test)
	if os.Getenv("PWSYNC_E2E_CHILD") == "1" {
		if err := dispatch(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "pwsync:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const pendingGroup = "6a1d7c3e-0000-4000-8000-00000000beef"

// stack is one end-to-end environment: a test OU in the real Samba DC, a
// Graph simulator, and a pwsync config pointing at both.
type stack struct {
	opts     stackOpts
	dc       *adtest.DC
	ou       string
	sim      *graphsim.Server
	dir      string
	cfgPath  string
	opsAddr  string
	hookAddr string
	secret   string       // the Graph client secret
	hook     *http.Client // Graph's side of the webhook (trusts its certificate)
	bindDN   string
	bindPW   string
	admin    *adminStack // set by withAdmin
}

type stackOpts struct {
	BreakGlassUPNs []string
	TryCloudFlag   bool
	// CloudRevoke: actuator.cloud_managed.revoke_sessions (off by default here).
	CloudRevoke bool
	// Webhook runs the Graph side: receiver (TLS), subscription, delta;
	// and turns the never-expires rule on.
	Webhook bool
	// PollOnly turns LDAP change notifications off (the baseline of the latency benchmark).
	PollOnly bool
	// NATSURL uses an external NATS instead of the embedded one.
	NATSURL string
	// NATSListen lets the test connect to the embedded NATS (to read KV and streams).
	NATSListen string
	// NATSMaxStore bounds the embedded JetStream's disk use (nats.embedded.max_store).
	NATSMaxStore string
	// ADURL replaces the DC's LDAPS URL (e.g. a proxy the test can cut).
	ADURL string
	// GraphTimeout is graph.timeout (per request); 0 = the default.
	GraphTimeout time.Duration
	// LiteralSecrets writes the Graph secret and bind password into the file.
	LiteralSecrets bool
	// GraphSecret is the app's client secret (default simSecret).
	GraphSecret string
	// BindDN and BindPassword replace the DC administrator as the bind account.
	BindDN, BindPassword string
	// ADURLs lists the domain's DCs (urls:, preferred first) instead of url.
	ADURLs []string
	// PreferredProbe is ad.domains[].preferred_probe.
	PreferredProbe time.Duration
	// Kerberos binds with a keytab instead: no bind_dn, no bind_password.
	Kerberos *krbOpts
	// Expiry turns on the expiry rules with these lead days.
	Expiry []int
	// Notify delivers notices (notify.enabled, one sender mailbox, the
	// simulator's sendMail) and turns on forced-change's reset notice.
	Notify bool
	// EntraGroups brings users into scope by Entra group; with NoOUScope
	// the test OU does not, so only they are in scope.
	EntraGroups []string
	NoOUScope   bool
	// SimWriteBudget and SimWriteWindow replace the simulator's write
	// budget (Graph's 3,000 per 150 s), e.g. time-scaled.
	SimWriteBudget int
	SimWriteWindow time.Duration
	// WorkflowsWebhookURL is notify.workflows_webhook_url (admin alerts),
	// written literally; needs Notify.
	WorkflowsWebhookURL string
	// Fallback is actuator.cloud_managed.fallback (default chain).
	Fallback string
	// ChildBinary and ChildCredential make startProcess run another copy
	// of the test binary, as another user (e.g. an unprivileged one).
	ChildBinary     string
	ChildCredential *syscall.Credential
	// SimTokenLifetime is the simulator's access token lifetime (default an hour).
	SimTokenLifetime time.Duration
	// Undo replaces actuator.undo's await_cloud and clear_cloud_flag.
	Undo *undoOpts
	// DedupWindow is webhook.dedup_window: a change shortly after another of
	// the same user (seconds here, minutes in reality) must not be collapsed.
	DedupWindow time.Duration
	// IncludeDisabled is evaluator.scope.include_disabled (bulk-created
	// users are disabled).
	IncludeDisabled bool
	// WriteBudget and WriteWindow are actuator.write_budget and
	// write_window (0: the defaults), e.g. time-scaled like the simulator's.
	WriteBudget int
	WriteWindow time.Duration
	// ExtraYAML is appended to the config as it is (top-level keys, e.g. risk:).
	ExtraYAML string
	// Pprof is ops.pprof: Go's profiles on the ops listener.
	Pprof bool
}

// krbOpts is ad.domains[].kerberos (kerberos_e2e_test.go).
type krbOpts struct{ Principal, KeytabFile, KRB5Conf string }

type undoOpts struct {
	AwaitCloud     time.Duration
	ClearCloudFlag bool
}

// undoAtADChange is the undo of before issue 19, now an option: at AD's
// password change, flag cleared.
var undoAtADChange = &undoOpts{AwaitCloud: 0, ClearCloudFlag: true}

// noticeSender is the mailbox notices come from in end-to-end tests.
const noticeSender = "pwsync-noreply@contoso.test"

var configTemplate = template.Must(template.New("cfg").Parse(`
log: {level: info}
shutdown_timeout: 10s
nats:
{{- if .Opts.NATSURL}}
  url: {{.Opts.NATSURL}}
{{- else}}
  embedded: {data_dir: {{.Dir}}/nats{{if .Opts.NATSListen}}, listen: "{{.Opts.NATSListen}}"{{end}}{{if .Opts.NATSMaxStore}}, max_store: {{.Opts.NATSMaxStore}}{{end}}}
{{- end}}
ad:
  domains:
    - name: example.test
{{- if .Opts.ADURLs}}
      urls: [{{range $i, $u := .Opts.ADURLs}}{{if $i}}, {{end}}{{$u}}{{end}}]
{{- else}}
      url: {{if .Opts.ADURL}}{{.Opts.ADURL}}{{else}}{{.DC.LDAPSURL}}{{end}}
{{- end}}
{{- with .Opts.PreferredProbe}}
      preferred_probe: {{.}}
{{- end}}
      ca_file: {{.DC.CAFile}}
{{- with .Opts.Kerberos}}
      kerberos: {realm: {{$.DC.Realm}}, principal: "{{.Principal}}", keytab_file: {{.KeytabFile}}, krb5_conf: {{.KRB5Conf}}}
{{- else}}
      bind_dn: "{{.BindDN}}"
      bind_password: {{if .Opts.LiteralSecrets}}"{{.BindPW}}"{{else}}env:PWSYNC_TEST_AD_PASSWORD{{end}}
{{- end}}
      base_dn: {{.DC.BaseDN}}
      poll_interval: {{if .Opts.PollOnly}}2s{{else}}1s{{end}}
      notifications: {{not .Opts.PollOnly}}
graph:
  tenant_id: {{.Sim.TenantID}}
  client_id: {{.Sim.ClientID}}
  client_secret: {{if .Opts.LiteralSecrets}}"{{.Secret}}"{{else}}env:PWSYNC_TEST_GRAPH_SECRET{{end}}
  authority_host: {{.Sim.AuthorityHost}}
  base_url: {{.GraphBase}}
  ca_file: {{.Dir}}/graph-ca.pem
{{- if .Opts.GraphTimeout}}
  timeout: {{.Opts.GraphTimeout}}
{{- end}}
evaluator:
  scope:
    include_ous: [{{if not .Opts.NoOUScope}}"{{.OU}}"{{end}}]
{{- if .Opts.EntraGroups}}
    include_entra_groups: [{{range $i, $g := .Opts.EntraGroups}}{{if $i}}, {{end}}"{{$g}}"{{end}}]
{{- end}}
    break_glass_upns: [{{range $i, $u := .Opts.BreakGlassUPNs}}{{if $i}}, {{end}}"{{$u}}"{{end}}]
{{- if .Opts.IncludeDisabled}}
    include_disabled: true
{{- end}}
  never_expires: {enabled: {{.Opts.Webhook}}}
{{- if .Opts.Notify}}
  forced_change: {notify: true}
{{- end}}
{{- if .Opts.Expiry}}
  expiry: {enabled: true, lead_days: [{{range $i, $l := .Opts.Expiry}}{{if $i}}, {{end}}{{$l}}{{end}}], max_late: 2000h}
{{- end}}
actuator:
  cloud_managed: {verify: true, fallback: {{with .Opts.Fallback}}{{.}}{{else}}chain{{end}}, revoke_sessions: {{.Opts.CloudRevoke}}}
  synced: {revoke_sessions: true, pending_group_id: "{{.Group}}", try_cloud_flag: {{.Opts.TryCloudFlag}}}
  retry: {max_attempts: 3, initial_interval: 50ms, max_interval: 500ms, long_wait: 2s}
{{- if .Opts.WriteBudget}}
  write_budget: {{.Opts.WriteBudget}}
  write_window: {{.Opts.WriteWindow}}
{{- end}}
{{- with .Opts.Undo}}
  undo: {await_cloud: {{.AwaitCloud}}, clear_cloud_flag: {{.ClearCloudFlag}}}
{{- end}}
ops: {listen: "{{.Ops}}"{{if .Opts.Pprof}}, pprof: true{{end}}}
{{- if .Opts.Notify}}
notify:
  enabled: true
  senders: [{{.Sender}}]
  pacing: {mail_per_window: 30, mail_window: 2s}
{{- if .Opts.WorkflowsWebhookURL}}
  workflows_webhook_url: "{{.Opts.WorkflowsWebhookURL}}"
{{- end}}
{{- end}}
{{- if .Opts.Webhook}}
webhook:
  enabled: true
  listen: "{{.Hook}}"
  public_url: "https://{{.Hook}}"
  tls_cert: {{.Dir}}/hook-cert.pem
  tls_key: {{.Dir}}/hook-key.pem
  delta_interval: 1m
  dedup_window: {{with .Opts.DedupWindow}}{{.}}{{else}}0s{{end}}
{{- end}}
{{- with .Admin}}
admin:
  enabled: true
  listen: "{{.Addr}}"
  tls_cert: {{.Cert}}
  tls_key: {{.Key}}
  tokens:
{{- range .Tokens}}
    - {name: {{.Name}}, sha256: {{.SHA256}}, roles: [{{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}]}
{{- end}}
{{- if .ApproveAbove}}
campaigns: {approval_threshold: {{.ApproveAbove}}}
{{- end}}
{{- end}}
{{- with .Opts.ExtraYAML}}
{{.}}
{{- end}}
`))

const simSecret = "sim-client-secret-e2e"

func newStack(t testing.TB, o stackOpts) *stack {
	t.Helper()
	dc := adtest.Require(t)
	dir := t.TempDir()
	secret := simSecret
	if o.GraphSecret != "" {
		secret = o.GraphSecret
	}
	// Mail limits on a 2 s window (notify.pacing.mail_window matches): the
	// real limits' shape, faster.
	// A time-scaled write window scales Graph's other identity windows too
	// (TimeScaled; 0 keeps Graph's).
	simOpts := graphsim.Options{ClientSecret: secret, MailWindow: 2 * time.Second,
		WriteBudget: o.SimWriteBudget, TokenLifetime: o.SimTokenLifetime}.TimeScaled(o.SimWriteWindow)
	hookAddr := ""
	var hook *http.Client
	if o.Webhook {
		hookAddr = freeAddr(t)
		hook = webhookTLS(t, dir)
		simOpts.NotificationClient = hook
	}
	sim, err := graphsim.Start(simOpts)
	if err != nil {
		t.Fatalf("starting graph simulator: %v", err)
	}
	t.Cleanup(sim.Close)
	sim.PutGroup(pendingGroup, "Password change pending")
	if o.Notify {
		sim.PutUser(graphsim.User{ID: "mailbox-noreply", UserPrincipalName: noticeSender, Mail: noticeSender, AccountEnabled: true})
	}
	s := &stack{opts: o, dc: dc, ou: dc.NewOU(t), sim: sim, dir: dir, opsAddr: freeAddr(t), hookAddr: hookAddr,
		secret: secret, hook: hook, bindDN: dc.BindDN, bindPW: dc.BindPassword}
	s.cfgPath = filepath.Join(s.dir, "pwsync.yaml")
	if err := sim.WriteCAFile(filepath.Join(s.dir, "graph-ca.pem")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PWSYNC_TEST_AD_PASSWORD", dc.BindPassword)
	t.Setenv("PWSYNC_TEST_GRAPH_SECRET", secret)
	return s
}

// writeConfig renders the config from s.opts; start calls it, so tests may
// change opts (e.g. break-glass UPNs of users they created) before.
func (s *stack) writeConfig(t testing.TB) {
	t.Helper()
	if s.opts.BindDN != "" {
		s.bindDN, s.bindPW = s.opts.BindDN, s.opts.BindPassword
		t.Setenv("PWSYNC_TEST_AD_PASSWORD", s.bindPW)
	}
	var buf bytes.Buffer
	// The simulator reached as "localhost", not the 127.0.0.1 of its own
	// URL: it refuses a $ref naming any other Graph host than the one
	// configured, so a host that is not configuration shows.
	graphBase := strings.Replace(s.sim.GraphBaseURL(), "https://127.0.0.1:", "https://localhost:", 1)
	err := configTemplate.Execute(&buf, map[string]any{"Dir": s.dir, "DC": s.dc, "Sim": s.sim, "OU": s.ou, "GraphBase": graphBase,
		"Group": pendingGroup, "Opts": s.opts, "Ops": s.opsAddr, "Hook": s.hookAddr, "Secret": s.secret,
		"BindDN": s.bindDN, "BindPW": s.bindPW, "Admin": s.admin, "Sender": noticeSender})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// cloudUser gives an AD user its cloud account: synced (joined by
// onPremisesImmutableId) or cloud-managed (matched by UPN only).
func (s *stack) cloudUser(u adtest.User, synced bool) string {
	gu := graphsim.User{ID: "cloud-" + u.SAM, UserPrincipalName: u.UPN, AccountEnabled: true, DisplayName: u.SAM}
	if synced {
		gu.OnPremisesImmutableId, gu.OnPremisesSyncEnabled = u.ImmutableID, true
	}
	s.sim.PutUser(gu)
	return gu.ID
}

// startInProcess runs pwsync in this process until the test ends.
func (s *stack) startInProcess(t testing.TB) {
	t.Helper()
	s.writeConfig(t)
	cfg, _, err := config.Load(s.cfgPath, config.AllTargets, os.Getenv)
	if err != nil {
		t.Fatalf("loading config: %v", err)
	}
	logFile, err := os.Create(filepath.Join(s.dir, "pwsync.log"))
	if err != nil {
		t.Fatal(err)
	}
	out := &runLog{f: logFile}
	log, _ := logx.New(out, cfg.Log.Level, "json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, config.AllTargets, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pwsync run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("pwsync did not stop within 20s")
		}
		late, abandoned := out.close()
		if t.Failed() {
			s.dumpLog(t)
		}
		for _, l := range late {
			if abandoned { // the shutdown timeout left work running, as it says: expected
				t.Logf("logged after run returned, past the shutdown timeout: %s", l)
				continue
			}
			t.Errorf("logged after run returned (a goroutine run does not own): %s", l)
		}
	})
	s.waitReady(t, done)
}

// runLog is pwsync's log file in an in-process run. A line written after
// run returned comes from a goroutine that run does not own and wait for,
// unless run said its shutdown timeout abandoned in-flight work.
type runLog struct {
	mu        sync.Mutex
	f         *os.File
	closed    bool
	late      []string
	abandoned bool
}

// abandonedMsg is run's warning that its shutdown timeout left work running.
const abandonedMsg = "in-flight work abandoned"

func (w *runLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.late = append(w.late, strings.TrimSpace(string(p)))
		return len(p), nil
	}
	w.abandoned = w.abandoned || bytes.Contains(p, []byte(abandonedMsg))
	return w.f.Write(p)
}

// close closes the file; what is written from then on is kept and
// returned after a short wait (a leftover goroutine logs at once, if at all).
func (w *runLog) close() (late []string, abandoned bool) {
	w.mu.Lock()
	w.closed = true
	w.f.Close()
	w.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.late), w.abandoned
}

// proc is pwsync running as a child process.
type proc struct {
	cmd  *exec.Cmd
	done chan error // Wait's result, once
}

// startProcess runs pwsync as a child process (the test binary re-executed).
func (s *stack) startProcess(t testing.TB) *proc {
	t.Helper()
	p := s.spawnProcess(t)
	s.waitReady(t, p.done)
	return p
}

// spawnProcess starts the child without waiting for it to be ready.
func (s *stack) spawnProcess(t testing.TB) *proc {
	t.Helper()
	s.writeConfig(t)
	logFile, err := os.OpenFile(filepath.Join(s.dir, "pwsync.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Args[0]
	if s.opts.ChildBinary != "" {
		bin = s.opts.ChildBinary
	}
	cmd := exec.Command(bin, "run", "--config", s.cfgPath)
	cmd.Env = append(os.Environ(), "PWSYNC_E2E_CHILD=1")
	if c := s.opts.ChildCredential; c != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c}
		if err := os.Chown(s.cfgPath, int(c.Uid), int(c.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	exited := make(chan error, 1)
	go func() { err := cmd.Wait(); logFile.Close(); exited <- err; p.done <- err }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			s.dumpLog(t)
		}
	})
	return p
}

func (s *stack) waitReady(t testing.TB, done <-chan error) {
	t.Helper()
	// The first full sync reads the whole shared DC (adtest's 5,000-user
	// bulk OU too) while other packages use it: seconds alone, a minute or
	// more on a busy 2-core box.
	const readyWait = 3 * time.Minute
	deadline := time.Now().Add(readyWait)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			s.dumpLog(t)
			t.Fatalf("pwsync exited before ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + s.opsAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.dumpLog(t)
	_, why := s.readyz()
	t.Fatalf("pwsync not ready after %s; /readyz:\n%s", readyWait, why)
}

func (s *stack) dumpLog(t testing.TB) {
	data, _ := os.ReadFile(filepath.Join(s.dir, "pwsync.log"))
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	t.Logf("pwsync log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}

// requestsFor returns the simulator's log entries that concern a cloud user.
func (s *stack) requestsFor(cloudID string) []graphsim.Request {
	var out []graphsim.Request
	for _, r := range s.sim.Requests() {
		if r.ItemID == "" && r.BatchID != "" {
			continue // the outer $batch POST; its items are logged on their own
		}
		if strings.Contains(r.Path, "/"+cloudID) || strings.Contains(string(r.Body), cloudID) {
			out = append(out, r)
		}
	}
	return out
}

// writes summarises a user's write requests as "METHOD kind" strings.
func (s *stack) writes(cloudID string) []string {
	var out []string
	for _, r := range s.requestsFor(cloudID) {
		if r.Method == http.MethodGet || strings.HasSuffix(r.Path, "/checkMemberGroups") { // reads
			continue
		}
		out = append(out, fmt.Sprintf("%s %s %d", r.Method, describe(r), r.Status))
	}
	// The revoke and the group add of the chain go out at once (issue 21):
	// their arrival order is the scheduler's, shown revoke first.
	for i := 1; i < len(out); i++ {
		if strings.HasPrefix(out[i-1], "POST members ") && strings.HasPrefix(out[i], "POST revoke ") {
			out[i-1], out[i] = out[i], out[i-1]
		}
	}
	return out
}

func describe(r graphsim.Request) string {
	switch {
	case strings.HasSuffix(r.Path, "/revokeSignInSessions"):
		return "revoke"
	case strings.Contains(r.Path, "/members"):
		return "members"
	case r.Method == http.MethodPatch:
		var body struct {
			PasswordProfile *struct {
				Force *bool   `json:"forceChangePasswordNextSignIn"`
				Pass  *string `json:"password"`
			} `json:"passwordProfile"`
		}
		_ = json.Unmarshal(r.Body, &body)
		switch {
		case body.PasswordProfile == nil:
			return "patch"
		case body.PasswordProfile.Pass != nil:
			return "password"
		case body.PasswordProfile.Force != nil:
			return fmt.Sprintf("force=%v", *body.PasswordProfile.Force)
		}
		return "passwordProfile"
	}
	return r.Path
}

// waitWrites waits until the user's writes equal want, then checks that
// nothing more arrives for settle.
func (s *stack) waitWrites(t testing.TB, cloudID string, want []string, settle time.Duration) {
	t.Helper()
	s.waitWritesWithin(t, cloudID, want, settle, 20*time.Second)
}

func (s *stack) waitWritesWithin(t testing.TB, cloudID string, want []string, settle, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := s.writes(cloudID)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes for %s = %v, want %v", cloudID, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(settle)
	if got := s.writes(cloudID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("writes for %s kept coming: %v, want %v", cloudID, got, want)
	}
}

// latencyRecorder timestamps the first matching Graph write per cloud user.
type latencyRecorder struct {
	mu    sync.Mutex
	first map[string]time.Time
}

func (l *latencyRecorder) observe(r graphsim.Request) {
	if r.Method != http.MethodPatch || r.Status >= 300 {
		return
	}
	id := r.Path[strings.LastIndex(r.Path, "/")+1:]
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.first[id]; !ok {
		l.first[id] = r.Time
	}
}

func (l *latencyRecorder) at(id string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.first[id]
	return t, ok
}

// webhookTLS writes a self-signed certificate for 127.0.0.1 as the webhook
// receiver's and returns an HTTP client (Graph's side) that trusts it.
func webhookTLS(t testing.TB, dir string) *http.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pwsync webhook test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "hook-cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hook-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
