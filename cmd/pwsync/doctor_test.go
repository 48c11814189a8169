package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
	"github.com/pwsync/pwsync/testrig/natstest"
)

var doctorTemplate = template.Must(template.New("cfg").Parse(`
nats:
  url: {{.NATS}}
ad:
  domains:
{{- range .Domains}}
    - name: {{.Name}}
      url: {{.URL}}
{{- if .CA}}
      ca_file: {{.CA}}
{{- end}}
      bind_dn: "{{.BindDN}}"
      bind_password: "{{.Password}}"
      base_dn: "{{.BaseDN}}"
{{- end}}
graph:
  tenant_id: {{.Sim.TenantID}}
  client_id: {{.Sim.ClientID}}
  client_secret: {{.Secret}}
  authority_host: {{.Sim.AuthorityHost}}
  base_url: {{.Sim.GraphBaseURL}}
  ca_file: {{.Dir}}/graph-ca.pem
actuator:
  synced: {revoke_sessions: true, pending_group_id: "00000000-0000-0000-0000-0000000000aa"}
webhook:
  enabled: true
  listen: 127.0.0.1:0
  public_url: {{.Hook}}
`))

type doctorDomain struct{ Name, URL, CA, BindDN, Password, BaseDN string }

type doctorEnv struct {
	Dir, NATS, Secret, Hook string
	Sim                     *graphsim.Server
	Domains                 []doctorDomain
}

// runDoctor writes the config and runs `pwsync doctor` on it.
func runDoctor(t *testing.T, env doctorEnv, extra ...string) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	if err := doctorTemplate.Execute(&buf, env); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(env.Dir, "doctor.yaml")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := append([]string{"doctor", "--config", path, "--timeout", "5s"}, extra...)
	err := dispatch(context.Background(), args, &out, &out)
	t.Logf("pwsync doctor:\n%s", out.String())
	return out.String(), err
}

// line finds the check line "STATUS  name ..." and the fix printed under it.
func line(t *testing.T, out, status, name string) (detail, fix string) {
	t.Helper()
	re := regexp.MustCompile(`^` + status + `  ` + regexp.QuoteMeta(name) + `\s+(.*)$`)
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		m := re.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		detail = m[1]
		for _, next := range lines[i+1:] {
			if !strings.HasPrefix(next, "      ") {
				break
			}
			if f, ok := strings.CutPrefix(next, "      fix: "); ok {
				return detail, f
			}
			detail += "\n" + strings.TrimSpace(next)
		}
		return detail, ""
	}
	t.Errorf("no %s line for %q", status, name)
	return "", ""
}

func wantFix(t *testing.T, out, status, name string, fixHas ...string) {
	t.Helper()
	_, fix := line(t, out, status, name)
	for _, w := range fixHas {
		if !strings.Contains(fix, w) {
			t.Errorf("%s %s: fix %q lacks %q", status, name, fix, w)
		}
	}
}

// echoHook answers Graph's validation handshake as pwsync's receiver does.
func echoHook(t *testing.T, dir string, echo bool) (url, caFile string) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("validationToken"); echo && r.Method == http.MethodPost && r.URL.Path == "/graph/notifications" {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(tok))
			return
		}
		http.Error(w, "default backend - 404", http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	caFile = filepath.Join(dir, "hook-ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// TestDoctorAllPass: real Samba AD (administrator: DirSync and Replicating
// Directory Changes), the simulator's default roles, a real NATS with the
// topology, and a receiver that answers the handshake.
func TestDoctorAllPass(t *testing.T) {
	dc := adtest.Require(t)
	dir := t.TempDir()
	sim := runSim(t, graphsim.Options{ClientSecret: "doctor-secret"}, filepath.Join(dir, "graph-ca.pem"))
	emb, _ := natstest.Run(t)
	hook, hookCA := echoHook(t, dir, true)
	env := doctorEnv{Dir: dir, NATS: emb.ClientURL(), Secret: "doctor-secret", Hook: hook, Sim: sim,
		Domains: []doctorDomain{{Name: "example.test", URL: dc.LDAPSURL, CA: dc.CAFile, BindDN: dc.BindDN, Password: dc.BindPassword, BaseDN: dc.BaseDN}}}
	out, err := runDoctor(t, env, "--webhook-ca", hookCA)
	if err != nil {
		t.Fatalf("doctor failed: %v", err)
	}
	for _, name := range []string{"config", "ad example.test tls", "ad example.test bind", "ad example.test dirsync",
		"ad example.test replicating changes", "ad example.test psos", "graph token", "graph role User-PasswordProfile.ReadWrite.All",
		"graph role GroupMember.ReadWrite.All", "graph role User.RevokeSessions.All", "nats connect", "nats jetstream",
		"nats streams", "webhook public_url"} {
		line(t, out, "PASS", name)
	}
	if !strings.HasSuffix(out, "all checks passed\n") {
		t.Errorf("no final verdict")
	}
}

// TestDoctorEachCheckFails breaks every check for a reason of its own and
// wants the FAIL (or WARN) line with the fix that names what to change.
func TestDoctorEachCheckFails(t *testing.T) {
	dc := adtest.Require(t)
	dir := t.TempDir()
	// A token without the password and group roles.
	sim := runSim(t, graphsim.Options{ClientSecret: "doctor-secret", Roles: []string{"User.Read.All"}}, filepath.Join(dir, "graph-ca.pem"))
	// An account without Replicating Directory Changes, which cannot read
	// PSOs either (a PSO of this test applies to a group).
	ou := dc.NewOU(t)
	const pw = "Doctor.Passw0rd-1"
	plain := dc.CreateUser(t, ou, "doctor-plain", adtest.UserOpts{Password: pw})
	psoGroup := dc.CreateGroup(t, ou, "doctor-pso")
	dc.CreatePSO(t, "pso-doctor", 5, 20*24*time.Hour, psoGroup)
	// NATS without JetStream.
	noJS, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	noJS.Start()
	t.Cleanup(noJS.Shutdown)
	if !noJS.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	hook, hookCA := echoHook(t, dir, false) // a 404 default backend, not pwsync
	env := doctorEnv{Dir: dir, NATS: noJS.ClientURL(), Secret: "doctor-secret", Hook: hook, Sim: sim,
		Domains: []doctorDomain{
			{Name: "no-ca", URL: dc.LDAPSURL, BindDN: dc.BindDN, Password: dc.BindPassword, BaseDN: dc.BaseDN},
			{Name: "bad-password", URL: dc.LDAPSURL, CA: dc.CAFile, BindDN: dc.BindDN, Password: "wrong-" + dc.BindPassword, BaseDN: dc.BaseDN},
			{Name: "no-rights", URL: dc.LDAPSURL, CA: dc.CAFile, BindDN: plain.DN, Password: pw, BaseDN: dc.BaseDN},
			{Name: "ou-base", URL: dc.LDAPSURL, CA: dc.CAFile, BindDN: dc.BindDN, Password: dc.BindPassword, BaseDN: ou},
			{Name: "unreachable", URL: "ldaps://127.0.0.1:1", CA: dc.CAFile, BindDN: dc.BindDN, Password: dc.BindPassword, BaseDN: dc.BaseDN},
		}}
	out, err := runDoctor(t, env, "--webhook-ca", hookCA)
	if err == nil || !strings.Contains(err.Error(), "check(s) failed") {
		t.Fatalf("want a failure, got %v", err)
	}
	wantFix(t, out, "FAIL", "ad no-ca tls", "ad.domains[0].ca_file")
	wantFix(t, out, "FAIL", "ad bad-password bind", "ad.domains[1].bind_dn", "bind_password")
	wantFix(t, out, "PASS", "ad no-rights dirsync")
	wantFix(t, out, "WARN", "ad no-rights psos", plain.DN, "CN=Password Settings Container,CN=System,"+dc.BaseDN, "dsacls")
	if d, _ := line(t, out, "WARN", "ad no-rights psos"); !strings.Contains(d, "cannot read them") {
		t.Errorf("psos line does not say the PSOs are unreadable: %q", d)
	}
	wantFix(t, out, "WARN", "ad no-rights replicating changes", "Replicating Directory Changes", plain.DN)
	if d, _ := line(t, out, "WARN", "ad no-rights replicating changes"); !strings.Contains(d, "LDAP 50") {
		t.Errorf("the DC's answer is not named: %q", d)
	}
	wantFix(t, out, "FAIL", "ad ou-base dirsync", "ad.domains[3].base_dn", "naming context root")
	wantFix(t, out, "FAIL", "ad unreachable connect", "ad.domains[4].url")
	line(t, out, "PASS", "graph token")
	line(t, out, "PASS", "graph role User.Read.All")
	wantFix(t, out, "FAIL", "graph role User-PasswordProfile.ReadWrite.All", "API permissions", "User-PasswordProfile.ReadWrite.All", "admin consent")
	wantFix(t, out, "FAIL", "graph role GroupMember.ReadWrite.All", "GroupMember.ReadWrite.All")
	line(t, out, "PASS", "nats connect")
	wantFix(t, out, "FAIL", "nats jetstream", "enable JetStream")
	wantFix(t, out, "FAIL", "webhook public_url", "route", "webhook.listen")

	t.Run("wrong_secret_stopped_nats_http_url", func(t *testing.T) {
		emb, conn := natstest.Run(t)
		url := emb.ClientURL()
		conn.NC.Close()
		emb.Shutdown()
		env.NATS, env.Secret, env.Hook = url, "not-the-secret", "https://127.0.0.1:1"
		env.Domains = env.Domains[1:2]
		out, err := runDoctor(t, env)
		if err == nil {
			t.Fatal("want a failure")
		}
		wantFix(t, out, "FAIL", "graph token", "graph.client_secret")
		wantFix(t, out, "FAIL", "nats connect", "nats.url")
		wantFix(t, out, "FAIL", "webhook public_url", "start pwsync's ingest target", "webhook.listen")
	})
	t.Run("config", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte("ops: {listen: 127.0.0.1:0, sample_interval: 10ms}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := dispatch(context.Background(), []string{"doctor", "--config", path}, &out, &out); err == nil {
			t.Fatal("want a failure")
		}
		d, fix := line(t, out.String(), "FAIL", "config")
		if !strings.Contains(d, "ops.sample_interval") || !strings.Contains(fix, "pwsync.example.yaml") {
			t.Errorf("config line: %q / %q", d, fix)
		}
	})
}
