// pwsync doctor's Graph checks: token, roles, and the webhook's validation handshake.

package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/ingest/webhook"
	"github.com/pwsync/pwsync/shared/config"
)

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
	if t.Ingest && c.Risk.Enabled {
		n = append(n, riskRoles(c.Risk.DismissAfterChange)...)
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
