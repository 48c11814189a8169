package conformance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

// graphRun holds what the Graph checks learn from each other.
type graphRun struct {
	*runner
	g      *Graph
	roles  []string
	user   *graph.User // the cloud test user as first read
	synced *graph.User // the AD test user's Entra account, found by immutable id
}

func (r *runner) graph(ctx context.Context, g *Graph) {
	gr := &graphRun{runner: r, g: g}
	gr.token(ctx)
	gr.userByUPN(ctx)
	gr.userByID(ctx)
	gr.userNotFound(ctx)
	gr.userByImmutableID(ctx)
	gr.unknownImmutableID(ctx)
	gr.deltaFirstPage(ctx)
	deltaLink := gr.deltaItem(ctx)
	gr.deltaChange(ctx, deltaLink)
	gr.subscriptionUnknown(ctx)
	gr.subscriptionLifecycle(ctx)
	gr.batch(ctx)
	gr.directoryRole(ctx)
	gr.passwordProfile(ctx)
	gr.passwordProfileSynced(ctx)
	gr.revokeSessions(ctx)
	gr.groupMember(ctx)
	gr.permission("graph mail permission", r.opts.MailSenders, "notify.senders", []string{"Mail.Send"},
		"Mail.Send (application) for sendMail from notify.senders", "")
	gr.permission("graph teams permission", r.opts.Teams, "notify.teams", []string{"TeamsActivity.Send"},
		"TeamsActivity.Send (application) for activity feed notices",
		"TeamsActivity.Send is not in the token; TeamsActivity.Send.User, granted per user by installing the Teams app (RSC), never is: cannot tell")
}

func (gr *graphRun) token(ctx context.Context) {
	const name = "graph token"
	roles, exp, err := gr.g.Token(ctx)
	switch {
	case err != nil:
		gr.fail(name, errText(err), "an app-only token from the tenant's token endpoint (client credentials)")
	case len(roles) == 0:
		gr.fail(name, "token without a roles claim", "an app-only token carries the application permissions granted with admin consent in its roles claim")
	default:
		gr.roles = roles
		gr.pass(name, fmt.Sprintf("app-only token valid until %s; roles: %s", exp.UTC().Format(time.RFC3339), strings.Join(roles, ", ")))
	}
}

// userSeen is the part of a user a result shows.
func userSeen(u *graph.User) string {
	return fmt.Sprintf("id=%s upn=%s onPremisesSyncEnabled=%t accountEnabled=%t passwordPolicies=%q forceChangePasswordNextSignIn=%t",
		u.ID, u.UPN, u.SyncEnabled, u.AccountEnabled, u.PasswordPolicies, u.ForceChangeNextSignIn)
}

func (gr *graphRun) userByUPN(ctx context.Context) {
	const name = "graph user by upn"
	if gr.opts.TestUser == "" {
		gr.skip(name, "no test user (--test-user UPN)")
		return
	}
	u, err := gr.g.Client.GetUser(ctx, gr.opts.TestUser)
	want := "200 with the user, its id and the $select'ed password properties"
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
	case u.ID == "" || !strings.EqualFold(u.UPN, gr.opts.TestUser):
		gr.fail(name, userSeen(u), want+", userPrincipalName "+gr.opts.TestUser)
	default:
		gr.user = u
		gr.pass(name, userSeen(u))
	}
}

func (gr *graphRun) userByID(ctx context.Context) {
	const name = "graph user by id"
	if gr.user == nil {
		gr.skip(name, "no test user read")
		return
	}
	u, err := gr.g.Client.GetUser(ctx, gr.user.ID)
	want := "200 with the same user as read by UPN"
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
	case u.ID != gr.user.ID || !strings.EqualFold(u.UPN, gr.user.UPN):
		gr.fail(name, userSeen(u), want)
	default:
		gr.pass(name, userSeen(u))
	}
}

// newGUID is a random GUID no directory object has.
func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (gr *graphRun) userNotFound(ctx context.Context) {
	const name = "graph user not found"
	_, err := gr.g.Client.GetUser(ctx, newGUID())
	want := "404 Request_ResourceNotFound: pwsync tells a deleted or unknown user from a failure by the 404"
	if graph.IsNotFound(err) {
		gr.pass(name, errText(err))
		return
	}
	gr.fail(name, errText(err), want)
}

func (gr *graphRun) userByImmutableID(ctx context.Context) {
	const name = "graph user by immutable id"
	imm, from := gr.adImmutableID, "AD test user "+gr.adTestUser
	if imm == "" && gr.user != nil && gr.user.ImmutableID != "" {
		imm, from = gr.user.ImmutableID, "test user "+gr.user.UPN
	}
	if imm == "" {
		gr.skip(name, "no synced test user (--test-ad-user NAME, synced to Entra)")
		return
	}
	u, err := gr.g.Client.FindByImmutableID(ctx, imm)
	want := fmt.Sprintf("$filter=onPremisesImmutableId eq '%s' finds the Entra account of %s (is it in Entra Connect's scope?)", imm, from)
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
	case u == nil:
		gr.fail(name, "200 with no user", want)
	case u.ImmutableID != imm || !u.SyncEnabled:
		gr.fail(name, userSeen(u)+" onPremisesImmutableId="+u.ImmutableID, want+", with onPremisesSyncEnabled true")
	default:
		gr.synced = u
		gr.pass(name, from+": "+userSeen(u))
	}
}

func (gr *graphRun) unknownImmutableID(ctx context.Context) {
	const name = "graph user by unknown immutable id"
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	u, err := gr.g.Client.FindByImmutableID(ctx, base64.StdEncoding.EncodeToString(raw))
	want := "200 with an empty list (not an error): an AD user without a cloud account"
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
	case u != nil:
		gr.fail(name, "found "+userSeen(u), want)
	default:
		gr.pass(name, "200, no user")
	}
}

func (gr *graphRun) batch(ctx context.Context) {
	const name = "graph batch"
	if gr.g.Batcher == nil {
		gr.skip(name, "no $batch client")
		return
	}
	first := "/users?$top=1&$select=id,userPrincipalName"
	if gr.user != nil {
		first = "/users/" + gr.user.ID + "?$select=id,userPrincipalName"
	}
	missing := newGUID()
	reqs := []graph.BatchRequest{
		{ID: "1", Method: http.MethodGet, URL: first},
		{ID: "2", Method: http.MethodGet, URL: "/users/" + missing + "?$select=id"},
		{ID: "3", Method: http.MethodGet, URL: "/users?$top=1&$select=id"},
	}
	want := "200 with one answer per request id (in any order): 200, 404, 200, each with its own body"
	res, err := gr.g.Batcher.Batch(ctx, reqs)
	if err != nil {
		gr.fail(name, errText(err), want)
		return
	}
	statuses := make([]string, len(res))
	ok := len(res) == 3
	for i, it := range res {
		statuses[i] = fmt.Sprintf("%s:%d", it.ID, it.Status)
		if i < len(reqs) && it.ID != reqs[i].ID {
			ok = false
		}
	}
	if ok {
		ok = res[0].Status == 200 && len(res[0].Body) > 0 && res[1].Status == 404 && res[1].Err != nil && res[2].Status == 200
	}
	if !ok {
		gr.fail(name, strings.Join(statuses, " "), want)
		return
	}
	gr.pass(name, strings.Join(statuses, " ")+"; 404 item: "+res[1].Err.Code)
}
