package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/services/ingest/webhook"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/shared/natsx"
)

// `pwsync doctor` checks, one line each, what pwsync needs from its
// environment and says how to fix what is wrong. It changes nothing.

type checkStatus string

const (
	statusPass checkStatus = "PASS"
	statusWarn checkStatus = "WARN"
	statusFail checkStatus = "FAIL"
	statusSkip checkStatus = "SKIP"
)

type checkResult struct {
	Status checkStatus
	Name   string
	Detail string
	Fix    string
}

func (r checkResult) String() string {
	// Continuation lines (several config errors) stay under their check.
	s := fmt.Sprintf("%s  %-44s %s", r.Status, r.Name, strings.ReplaceAll(r.Detail, "\n", "\n      "))
	if r.Fix != "" && r.Status != statusPass {
		s += "\n      fix: " + r.Fix
	}
	return s
}

// tokenFunc acquires a Graph token and returns the application roles in it.
type tokenFunc func(ctx context.Context) (roles []string, expires time.Time, err error)

type doctor struct {
	cfg       config.Config
	targets   config.Targets
	token     tokenFunc
	webhookCA *x509.CertPool // extra roots for the public URL check (nil = system roots)
	timeout   time.Duration  // per network check
	results   []checkResult
}

func (d *doctor) add(r checkResult) { d.results = append(d.results, r) }

func doctorCommand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	cfgPath := fs.String("config", "pwsync.yaml", "configuration file")
	target := fs.String("target", "all", "all | ingest | evaluator | actuator: check what this target needs")
	webhookCA := fs.String("webhook-ca", "", "PEM CA bundle also trusted for webhook.public_url (test setups; Graph itself needs a public CA)")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each network check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, err := parseTarget(*target)
	if err != nil {
		return err
	}
	d := &doctor{targets: t, timeout: *timeout}
	if *webhookCA != "" {
		pool, err := certPool(*webhookCA, true)
		if err != nil {
			return fmt.Errorf("--webhook-ca: %w", err)
		}
		d.webhookCA = pool
	}
	if ok := d.checkConfig(*cfgPath); ok {
		d.token = graphToken(d.cfg)
		d.run(ctx)
	}
	failed := 0
	for _, r := range d.results {
		fmt.Fprintln(stdout, r)
		if r.Status == statusFail {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("doctor: %d check(s) failed", failed)
	}
	fmt.Fprintln(stdout, "all checks passed")
	return nil
}

// run runs every check after the configuration's.
func (d *doctor) run(ctx context.Context) {
	if d.targets.Ingest {
		for i, dom := range d.cfg.AD.Domains {
			d.checkDomain(ctx, fmt.Sprintf("ad.domains[%d]", i), dom)
		}
	}
	if d.targets.Actuator || (d.targets.Ingest && d.cfg.Webhook.Enabled) {
		d.checkGraph(ctx)
	}
	d.checkNATS(ctx)
	if d.targets.Ingest && d.cfg.Webhook.Enabled {
		d.checkWebhook(ctx)
	}
}

func (d *doctor) checkConfig(path string) bool {
	cfg, warnings, err := config.Load(path, d.targets, os.Getenv)
	if err != nil {
		d.add(checkResult{statusFail, "config", err.Error(),
			"correct the key named above in " + path + " (deployments/config/pwsync.example.yaml documents every key); `pwsync config check` re-checks it"})
		return false
	}
	d.cfg = cfg
	d.add(checkResult{Status: statusPass, Name: "config", Detail: path + " loads and validates"})
	for _, w := range warnings {
		name, fix := "config", "see the warning; secrets belong in env:NAME or file:PATH"
		switch {
		case strings.Contains(w, "notify.enabled is off"):
			fix = "turn notify on (notify.enabled, notify.senders) or those notices off, as the warning says"
		case strings.Contains(w, "actuator.cloud_managed.fallback"):
			name = "must-change fallback"
			fix = "set actuator.synced.pending_group_id (a group that Conditional Access blocks until the password changes), " +
				"or actuator.cloud_managed.fallback: temporary_password; the README's \"When the flag does not take\" says what the user sees with each"
		}
		d.add(checkResult{statusWarn, name, w, fix})
	}
	return true
}

// --- AD ---

// LDAP result codes doctor explains.
const (
	ldapInvalidCredentials = 49
	ldapInsufficientAccess = 50
	ldapUnwilling          = 53
	ldapNoSuchObject       = 32
	ldapUnavailableCrit    = 12
)

func (d *doctor) checkDomain(ctx context.Context, key string, dom config.Domain) {
	name := "ad " + dom.Name
	u, err := url.Parse(dom.URL)
	if err != nil {
		d.add(checkResult{statusFail, name + " connect", err.Error(), key + ".url: use ldaps://dc.example.com:636"})
		return
	}
	// Checked even with insecure_skip_verify: doctor says whether the chain holds.
	tc, err := ldapconn.TLSConfig(dom.URL, dom.CAFile, false)
	if err != nil {
		d.add(checkResult{statusFail, name + " tls", err.Error(), key + ".ca_file: a PEM file with the CA that issued the DC's certificate"})
		return
	}
	plain := u.Scheme == "ldap" && !dom.StartTLS
	c, err := ldapconn.Connect(ldapconn.Config{URL: dom.URL, StartTLS: dom.StartTLS, DialTimeout: d.timeout, RequestTimeout: d.timeout}, tc)
	switch {
	case err != nil && isCertError(err):
		d.add(checkResult{statusFail, name + " tls", "certificate not trusted: " + err.Error(),
			certFix(key, dom, u.Hostname())})
		if dom.InsecureSkipVerify {
			d.add(checkResult{statusWarn, name + " tls", "insecure_skip_verify is set: pwsync would connect, but the chain is not verified",
				"remove " + key + ".insecure_skip_verify once " + key + ".ca_file is right"})
		}
		return
	case err != nil:
		d.add(checkResult{statusFail, name + " connect", err.Error(),
			"check " + key + ".url (host, port 636 for ldaps, 389 for start_tls) and that the DC is reachable from here (firewall, DNS)"})
		return
	}
	defer c.Close()
	if plain {
		d.add(checkResult{statusWarn, name + " tls", "plain LDAP: the bind password and password events travel unencrypted",
			"use ldaps://...:636 or " + key + ".start_tls: true, with " + key + ".ca_file"})
	} else if st, ok := c.TLSConnectionState(); ok && len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		d.add(checkResult{Status: statusPass, Name: name + " tls", Detail: fmt.Sprintf("verified chain: %s issued by %s, valid until %s",
			leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format("2006-01-02"))})
	}

	if err := c.Bind(dom.BindDN, dom.BindPassword.Value()); err != nil {
		fix := "check " + key + ".bind_dn and " + key + ".bind_password (and that the account is enabled and its password not expired)"
		if ldapResult(err) != ldapInvalidCredentials {
			fix = "the DC refused the bind: " + fix
		}
		d.add(checkResult{statusFail, name + " bind", err.Error(), fix})
		return
	}
	d.add(checkResult{Status: statusPass, Name: name + " bind", Detail: "bound as " + dom.BindDN})
	d.checkPSOs(c, name, dom)

	if dom.Mode == "usn" {
		d.add(checkResult{Status: statusSkip, Name: name + " dirsync", Detail: "mode usn: DirSync not used"})
		return
	}
	d.checkDirSync(c, key, name, dom)
}

// checkDirSync runs what the watcher's first poll runs (DirSync with object
// security, on the naming context), then the same without object security,
// which the DC grants only with "Replicating Directory Changes".
func (d *doctor) checkDirSync(c *ldap.Conn, key, name string, dom config.Domain) {
	const objectSecurity = 0x1
	req := func() *ldap.SearchRequest {
		// Matches nothing, through an index: the cheapest DirSync there is.
		return ldap.NewSearchRequest(dom.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(objectGUID=\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00)", []string{"objectGUID"}, nil)
	}
	grant := fmt.Sprintf("grant %s \"Replicating Directory Changes\" on %s (AD Users and Computers > domain > Properties > Security, or: dsacl)", dom.BindDN, dom.BaseDN)
	if _, err := c.DirSync(req(), objectSecurity, 0, nil); err != nil {
		var fix string
		switch ldapResult(err) {
		case ldapInsufficientAccess:
			fix = "the account may not run DirSync: " + grant
		case ldapUnwilling, ldapNoSuchObject:
			fix = key + ".base_dn must be the domain's naming context root (e.g. DC=corp,DC=example,DC=com); scope OUs with evaluator.scope.include_ous"
		case ldapUnavailableCrit:
			fix = "this server does not support DirSync: set " + key + ".mode: usn"
		default:
			fix = "see the LDAP error; " + key + ".mode: usn works without DirSync"
		}
		d.add(checkResult{statusFail, name + " dirsync", err.Error(), fix})
		return
	}
	d.add(checkResult{Status: statusPass, Name: name + " dirsync", Detail: "DirSync (object security) accepted at " + dom.BaseDN})
	_, err := c.DirSync(req(), 0, 0, nil)
	switch {
	case err == nil:
		d.add(checkResult{Status: statusPass, Name: name + " replicating changes", Detail: "the account holds Replicating Directory Changes"})
	case ldapResult(err) == ldapInsufficientAccess:
		d.add(checkResult{statusWarn, name + " replicating changes",
			"LDAP 50 insufficientAccessRights on DirSync without object security: the account lacks Replicating Directory Changes; pwsync still works but sees only objects and attributes the account may read",
			grant})
	default:
		d.add(checkResult{statusWarn, name + " replicating changes", "could not tell: " + err.Error(), grant})
	}
}

// checkPSOs compares the PSOs the bind account can read (the Password
// Settings Container, as the watcher reads it) with those that apply to
// someone (the msDS-PSOApplied back links of groups and users). By default
// AD lets only administrators read PSOs: pwsync then still has the DC's
// computed expiry, but cannot watch those PSOs' changes or compute expiry
// from them when the computed value is missing.
func (d *doctor) checkPSOs(c *ldap.Conn, name string, dom config.Domain) {
	nc := dom.BaseDN // the domain's naming context: a base_dn below it is reported by the dirsync check
	if root, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"defaultNamingContext"}, nil)); err == nil && len(root.Entries) == 1 {
		if v := root.Entries[0].GetAttributeValue("defaultNamingContext"); v != "" && strings.HasSuffix(strings.ToLower(dom.BaseDN), strings.ToLower(v)) {
			nc = v
		}
	}
	psc := "CN=Password Settings Container,CN=System," + nc
	readable := map[string]bool{}
	res, err := c.Search(ldap.NewSearchRequest(psc, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=msDS-PasswordSettings)", []string{"cn"}, nil))
	if err != nil && ldapResult(err) != ldapNoSuchObject {
		d.add(checkResult{statusWarn, name + " psos", "reading " + psc + ": " + err.Error(), psoGrant(dom, psc)})
		return
	}
	if res != nil {
		for _, e := range res.Entries {
			readable[strings.ToLower(e.DN)] = true
		}
	}
	applied, err := c.Search(ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 1000, int(d.timeout.Seconds()), false,
		"(msDS-PSOApplied=*)", []string{"msDS-PSOApplied"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		if len(readable) > 0 {
			d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: fmt.Sprintf("%d PSO(s) readable (which apply to whom not checked: %v)", len(readable), err)})
		} else {
			d.add(checkResult{statusWarn, name + " psos", "no PSO readable, and whether any applies could not be told: " + err.Error(), psoGrant(dom, psc)})
		}
		return
	}
	var missing []string
	seen := map[string]bool{}
	if applied != nil {
		for _, e := range applied.Entries {
			for _, p := range e.GetAttributeValues("msDS-PSOApplied") {
				if k := strings.ToLower(p); !readable[k] && !seen[k] {
					seen[k] = true
					missing = append(missing, p)
				}
			}
		}
	}
	switch {
	case len(missing) > 0:
		slices.Sort(missing)
		d.add(checkResult{statusWarn, name + " psos", fmt.Sprintf("%d PSO(s) apply to users or groups but %s cannot read them (e.g. %s): "+
			"pwsync uses the DC's computed expiry, but does not see those PSOs change and has no fallback expiry for their users",
			len(missing), dom.BindDN, missing[0]), psoGrant(dom, psc)})
	case len(readable) > 0:
		d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: fmt.Sprintf("%d PSO(s) readable in %s", len(readable), psc)})
	default:
		d.add(checkResult{Status: statusPass, Name: name + " psos", Detail: "no fine-grained password policy applies to anyone: the domain's maxPwdAge rules"})
	}
}

func psoGrant(dom config.Domain, psc string) string {
	return fmt.Sprintf("grant %s read on %s, inherited by its PSOs (AD Users and Computers > System > Password Settings Container > Properties > Security, or: dsacls \"%s\" /I:T /G \"<domain>\\<account>:GR\")",
		dom.BindDN, psc, psc)
}

func ldapResult(err error) int {
	var le *ldap.Error
	if errors.As(err, &le) {
		return int(le.ResultCode)
	}
	return -1
}

func isCertError(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var tv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &tv)
}

func certFix(key string, dom config.Domain, host string) string {
	if dom.CAFile == "" {
		return "set " + key + ".ca_file to the PEM of the CA that issued the DC's certificate (or install it in the system trust store)"
	}
	return fmt.Sprintf("%s.ca_file (%s) must hold the CA that issued the DC's certificate, and the certificate must name %q (use the DC's FQDN in %s.url)",
		key, dom.CAFile, host, key)
}

func certPool(path string, withSystem bool) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if withSystem {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// --- Graph ---

// roleNeed is one feature's Graph permission: any of Roles will do.
type roleNeed struct {
	Feature string
	Roles   []string // least privileged first
	// Fallback explains when the role may be legitimately absent from the token.
	Fallback string
}

// neededRoles lists the application roles the enabled features need (names
// and the broader roles that include them: graph-facts.md, and graphsim's
// routes, which enforce the same table).
func neededRoles(c config.Config, t config.Targets) []roleNeed {
	read := []string{"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
	var n []roleNeed
	if t.Actuator {
		n = append(n,
			roleNeed{Feature: "read users (identity join)", Roles: read},
			roleNeed{Feature: "force password change (cloud-managed users)", Roles: []string{"User-PasswordProfile.ReadWrite.All", "Directory.ReadWrite.All"}})
		if c.Evaluator.NeverExpires.Enabled {
			n = append(n, roleNeed{Feature: "passwordPolicies (never-expires rule)", Roles: []string{"User.ReadWrite.All", "User.ReadUpdate.All", "Directory.ReadWrite.All"}})
		}
		if c.Actuator.CloudManaged.RevokeSessions || c.Actuator.Synced.RevokeSessions {
			n = append(n, roleNeed{Feature: "revoke sign-in sessions", Roles: []string{"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"}})
		}
		if c.Actuator.Synced.PendingGroupID != "" {
			n = append(n, roleNeed{Feature: "pending group membership (synced users)", Roles: []string{"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"}})
		}
		if c.Notify.Enabled && len(c.Notify.Senders) > 0 {
			n = append(n, roleNeed{Feature: "email notices (notify.senders)", Roles: []string{"Mail.Send"}})
		}
		if c.Notify.Enabled && c.Notify.Teams.Enabled {
			n = append(n, roleNeed{Feature: "Teams notices (notify.teams)", Roles: []string{"TeamsActivity.Send"},
				Fallback: "TeamsActivity.Send.User is granted per user by installing the Teams app (RSC) and does not appear in the token"})
		}
	}
	if t.Ingest && c.Webhook.Enabled {
		n = append(n, roleNeed{Feature: "users delta and change notifications", Roles: read})
	}
	return n
}

func graphToken(c config.Config) tokenFunc {
	return func(ctx context.Context) ([]string, time.Time, error) {
		client, err := newGraphClient(c.Graph)
		if err != nil {
			return nil, time.Time{}, err
		}
		defer client.Close()
		return client.Token(ctx)
	}
}

func (d *doctor) checkGraph(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	roles, expires, err := d.token(ctx)
	if err != nil {
		d.add(checkResult{statusFail, "graph token", err.Error(), tokenFix(err)})
		return
	}
	d.add(checkResult{Status: statusPass, Name: "graph token", Detail: fmt.Sprintf("app-only token for %s, valid until %s, roles: %s",
		d.cfg.Graph.ClientID, expires.UTC().Format(time.RFC3339), strings.Join(roles, ", "))})
	for _, need := range neededRoles(d.cfg, d.targets) {
		name := "graph role " + need.Roles[0]
		if i := slices.IndexFunc(need.Roles, func(r string) bool { return slices.Contains(roles, r) }); i >= 0 {
			d.add(checkResult{Status: statusPass, Name: name, Detail: need.Roles[i] + " granted: " + need.Feature})
			continue
		}
		r := checkResult{statusFail, name, "missing, needed for " + need.Feature,
			fmt.Sprintf("Entra admin center > App registrations > %s > API permissions > Add > Microsoft Graph > Application > %s, then \"Grant admin consent\"",
				d.cfg.Graph.ClientID, need.Roles[0])}
		if need.Fallback != "" {
			r.Status, r.Detail = statusWarn, r.Detail+" ("+need.Fallback+")"
		}
		d.add(r)
	}
}

func tokenFix(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "AADSTS7000215") || strings.Contains(msg, "AADSTS7000222") || strings.Contains(msg, "invalid_client"):
		return "the client secret is wrong or expired: create a new one (Certificates & secrets) and update graph.client_secret"
	case strings.Contains(msg, "AADSTS700016") || strings.Contains(msg, "unauthorized_client"):
		return "graph.client_id names no application in this tenant: copy the Application (client) ID of the app registration"
	case strings.Contains(msg, "AADSTS90002") || strings.Contains(msg, "invalid_tenant"):
		return "graph.tenant_id is not a tenant: copy the Directory (tenant) ID"
	case isCertError(err):
		return "the token endpoint's certificate is not trusted: set graph.ca_file (proxy or national cloud CA)"
	}
	return "check graph.tenant_id, graph.client_id, graph.client_secret / graph.certificate_file and graph.authority_host"
}

// --- NATS ---

func (d *doctor) checkNATS(ctx context.Context) {
	n := d.cfg.NATS
	if n.URL == "" {
		dir := n.Embedded.DataDir
		probe := filepath.Join(dir, ".pwsync-doctor")
		err := os.MkdirAll(dir, 0o700)
		if err == nil {
			err = os.WriteFile(probe, nil, 0o600)
			os.Remove(probe)
		}
		if err != nil {
			d.add(checkResult{statusFail, "nats embedded", err.Error(), "nats.embedded.data_dir must be a directory pwsync's user can write (systemd: StateDirectory=pwsync)"})
			return
		}
		d.add(checkResult{Status: statusPass, Name: "nats embedded", Detail: "JetStream store " + dir + " is writable"})
		if n.Replicas > 1 {
			d.add(checkResult{statusFail, "nats replicas", fmt.Sprintf("nats.replicas is %d but the embedded server is a single node", n.Replicas),
				"set nats.replicas: 1, or nats.url to a JetStream cluster"})
		}
		return
	}
	opts := []nats.Option{nats.Name("pwsync-doctor"), nats.Timeout(d.timeout), nats.MaxReconnects(0)}
	if n.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if n.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKeyFile)
		if err != nil {
			d.add(checkResult{statusFail, "nats connect", err.Error(), "nats.nkey_file must hold an nkey seed (SU...)"})
			return
		}
		opts = append(opts, o)
	}
	if n.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.CAFile))
	}
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		d.add(checkResult{statusFail, "nats connect", err.Error(),
			"check nats.url (nats://host:4222, comma-separated for a cluster), that nats-server runs and is reachable, and nats.creds_file / nats.nkey_file / nats.ca_file"})
		return
	}
	defer nc.Close()
	d.add(checkResult{Status: statusPass, Name: "nats connect", Detail: fmt.Sprintf("connected to %s (server %s, cluster %q, %d known servers)",
		nc.ConnectedUrlRedacted(), nc.ConnectedServerVersion(), nc.ConnectedClusterName(), len(nc.Servers()))})
	js, err := jetstream.New(nc)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		var info *jetstream.AccountInfo
		if info, err = js.AccountInfo(ctx); err == nil {
			d.add(checkResult{Status: statusPass, Name: "nats jetstream", Detail: fmt.Sprintf("usable: %d streams, %d consumers in the account", info.Streams, info.Consumers)})
			d.checkStreams(ctx, js, n.Replicas)
			return
		}
	}
	d.add(checkResult{statusFail, "nats jetstream", err.Error(),
		"enable JetStream on the servers (jetstream { store_dir: ... } in nats-server.conf; Helm: config.jetstream.enabled=true) and for pwsync's account"})
}

func (d *doctor) checkStreams(ctx context.Context, js jetstream.JetStream, replicas int) {
	var missing, differ []string
	for _, name := range []string{natsx.StreamEvents, natsx.StreamActions, natsx.StreamAudit, natsx.StreamDLQ} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		if r := s.CachedInfo().Config.Replicas; r != replicas {
			differ = append(differ, fmt.Sprintf("%s R%d", name, r))
		}
	}
	switch {
	case len(missing) > 0:
		d.add(checkResult{statusWarn, "nats streams", "missing: " + strings.Join(missing, ", "),
			"`pwsync run` creates them on start (the account needs permission to create streams)"})
	case len(differ) > 0:
		d.add(checkResult{statusWarn, "nats streams", fmt.Sprintf("replicas differ from nats.replicas=%d: %s", replicas, strings.Join(differ, ", ")),
			"`pwsync run` updates them on start; the cluster needs at least nats.replicas JetStream servers"})
	default:
		d.add(checkResult{Status: statusPass, Name: "nats streams", Detail: fmt.Sprintf("EVENTS, ACTIONS, AUDIT, DLQ present with R%d", replicas)})
	}
}

// --- webhook ---

// checkWebhook runs Graph's validation handshake against the public URL:
// a POST with ?validationToken= that pwsync's receiver echoes. It proves the
// URL reaches pwsync over HTTPS with a certificate this host trusts.
func (d *doctor) checkWebhook(ctx context.Context) {
	pub := strings.TrimRight(d.cfg.Webhook.PublicURL, "/")
	u, err := url.Parse(pub)
	if err != nil || u.Scheme != "https" {
		d.add(checkResult{statusFail, "webhook public_url", fmt.Sprintf("%q is not an https:// URL", pub),
			"Graph only calls https:// URLs: set webhook.public_url to the HTTPS address of the ingress in front of webhook.listen"})
		return
	}
	buf := make([]byte, 8)
	_, _ = rand.Read(buf)
	token := "pwsync-doctor-" + hex.EncodeToString(buf)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: d.webhookCA, MinVersion: tls.VersionTLS12}
	client := &http.Client{Transport: tr, Timeout: d.timeout}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, pub+webhook.PathNotifications+"?validationToken="+token, nil)
	resp, err := client.Do(req)
	if err != nil {
		fix := fmt.Sprintf("start pwsync's ingest target and route %s to webhook.listen (%s); the host must be reachable from Microsoft Graph", pub, d.cfg.Webhook.Listen)
		if isCertError(err) {
			fix = "the certificate at public_url must chain to a public CA and name the host: Graph refuses self-signed and private CAs"
		}
		d.add(checkResult{statusFail, "webhook public_url", err.Error(), fix})
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != token {
		d.add(checkResult{statusFail, "webhook public_url", fmt.Sprintf("the validation handshake got %d %q, not the token back", resp.StatusCode, truncate(string(body), 80)),
			fmt.Sprintf("something other than pwsync answers at %s: route %s/* to pwsync's webhook.listen (%s)", pub, pub, d.cfg.Webhook.Listen)})
		return
	}
	d.add(checkResult{Status: statusPass, Name: "webhook public_url", Detail: pub + webhook.PathNotifications + " answers Graph's validation handshake over HTTPS"})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
