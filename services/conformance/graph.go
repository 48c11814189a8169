package conformance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
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

func (gr *graphRun) deltaFirstPage(ctx context.Context) {
	const name = "graph delta first page"
	p, err := gr.g.Tracker.UsersDelta(ctx, "")
	want := "200 with value[] and exactly one of @odata.nextLink / @odata.deltaLink, below graph.base_url"
	if err != nil {
		gr.fail(name, errText(err), want)
		return
	}
	link := p.NextLink + p.DeltaLink
	if !strings.HasPrefix(link, strings.TrimRight(gr.g.BaseURL, "/")+"/") {
		gr.fail(name, "link "+redactLink(link), want)
		return
	}
	absent := map[string]int{}
	for _, u := range p.Users {
		for _, a := range u.Absent {
			absent[a]++
		}
	}
	kind := "nextLink"
	if p.DeltaLink != "" {
		kind = "deltaLink"
	}
	gr.pass(name, fmt.Sprintf("$select=%s: %d items, %s; properties left out: %s",
		strings.Join(graph.DeltaSelect, ","), len(p.Users), kind, countsSeen(absent, len(p.Users))))
}

// countsSeen renders {property: items} as "a 3/10, b 1/10" or "none".
func countsSeen(m map[string]int, of int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d/%d", k, m[k], of)
	}
	return strings.Join(parts, ", ")
}

// redactLink keeps a link's path and drops its query: delta and skip tokens
// are opaque state, not for output.
func redactLink(link string) string {
	if i := strings.IndexByte(link, '?'); i >= 0 {
		return link[:i] + "?..."
	}
	return link
}

// deltaFilterLink is the first link of a delta round on one user.
func (gr *graphRun) deltaFilterLink(id string) string {
	q := url.Values{}
	q.Set("$select", strings.Join(graph.DeltaSelect, ","))
	q.Set("$filter", "id eq '"+id+"'")
	return strings.TrimRight(gr.g.BaseURL, "/") + "/users/delta?" + q.Encode()
}

// followRound follows a delta round from link to its deltaLink and returns
// the items of userID seen on the way.
func (gr *graphRun) followRound(ctx context.Context, link, userID string) ([]graph.DeltaUser, string, error) {
	var items []graph.DeltaUser
	for range 50 {
		p, err := gr.g.Tracker.UsersDelta(ctx, link)
		if err != nil {
			return items, "", err
		}
		for _, u := range p.Users {
			if u.ID == userID {
				items = append(items, u)
			}
		}
		if p.DeltaLink != "" {
			return items, p.DeltaLink, nil
		}
		link = p.NextLink
	}
	return items, "", fmt.Errorf("no deltaLink after 50 pages")
}

// deltaItem reads the test user through a delta round filtered on its id
// and judges the item against GET's answer; it returns the round's deltaLink.
func (gr *graphRun) deltaItem(ctx context.Context) string {
	const name = "graph delta item"
	if gr.user == nil {
		gr.skip(name, "no test user read")
		return ""
	}
	items, deltaLink, err := gr.followRound(ctx, gr.deltaFilterLink(gr.user.ID), gr.user.ID)
	want := "the round ($filter=id eq) holds the user once, its values those of GET, never-set properties left out (not null) and ends with a deltaLink"
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
		return ""
	case len(items) != 1:
		gr.fail(name, fmt.Sprintf("%d items for the user", len(items)), want)
		return deltaLink
	}
	seen, problems := judgeDeltaItem(items[0], gr.user, true)
	if len(problems) > 0 {
		gr.fail(name, seen+"; "+strings.Join(problems, "; "), want)
	} else {
		gr.pass(name, seen)
	}
	return deltaLink
}

// deltaChange writes passwordPolicies (as the never-expires rule does) and
// follows the deltaLink until the change shows, then restores the value.
func (gr *graphRun) deltaChange(ctx context.Context, deltaLink string) {
	const name = "graph delta change"
	switch {
	case !gr.opts.Write:
		gr.skip(name, "read-only (--write to PATCH passwordPolicies of the test user and follow the deltaLink)")
		return
	case gr.user == nil || deltaLink == "":
		gr.skip(name, "no test user or no deltaLink")
		return
	case !gr.opts.NeverExpires:
		gr.skip(name, "evaluator.never_expires is off: pwsync does not write passwordPolicies")
		return
	}
	orig := gr.user.PasswordPolicies
	next := "DisablePasswordExpiration"
	if strings.Contains(orig, next) {
		next = "None"
	}
	want := "PATCH passwordPolicies 204; the next delta round holds the user with the new value (drift detection relies on it)"
	if err := gr.g.Client.SetPasswordPolicies(ctx, gr.user.ID, next); err != nil {
		gr.fail(name, "PATCH passwordPolicies: "+errText(err), want)
		return
	}
	restore := orig
	if restore == "" {
		restore = "None" // Graph's "no policies"; the client cannot PATCH null
	}
	defer func() {
		if err := gr.g.Client.SetPasswordPolicies(context.WithoutCancel(ctx), gr.user.ID, restore); err != nil {
			gr.fail(name+" undo", "PATCH passwordPolicies back to "+restore+": "+errText(err), "the test user's passwordPolicies restored")
		}
	}()
	var got graph.DeltaUser
	link := deltaLink
	ok, err := poll(ctx, gr.opts.Wait, func() (bool, error) {
		items, nextLink, err := gr.followRound(ctx, link, gr.user.ID)
		if err != nil {
			return false, err
		}
		link = nextLink
		for _, it := range items {
			got = it
			if !slices.Contains(it.Absent, "passwordPolicies") && it.PasswordPolicies == next {
				return true, nil
			}
		}
		return false, nil
	})
	switch {
	case err != nil:
		gr.fail(name, errText(err), want)
	case !ok:
		gr.fail(name, fmt.Sprintf("no item with passwordPolicies=%q within %s (last: %q, absent %v)", next, gr.opts.Wait, got.PasswordPolicies, got.Absent), want)
	default:
		seen, problems := judgeDeltaItem(got, gr.user, false)
		if len(problems) > 0 {
			gr.fail(name, seen+"; "+strings.Join(problems, "; "), want)
			return
		}
		gr.pass(name, fmt.Sprintf("PATCH 204, then in delta: passwordPolicies=%q; %s; restored to %q", next, seen, restore))
	}
}

func (gr *graphRun) subscriptionUnknown(ctx context.Context) {
	const name = "graph subscription unknown"
	_, err := gr.g.Tracker.GetSubscription(ctx, newGUID())
	if graph.IsNotFound(err) {
		gr.pass(name, errText(err))
		return
	}
	gr.fail(name, errText(err), "404 for a subscription Graph does not have: pwsync recreates its subscription on that answer")
}

func (gr *graphRun) subscriptionLifecycle(ctx context.Context) {
	const name = "graph subscription lifecycle"
	switch {
	case !gr.opts.Write:
		gr.skip(name, "read-only (--write creates, renews and deletes one /users subscription)")
		return
	case gr.opts.NotificationURL == "":
		gr.skip(name, "no notification URL (webhook.public_url with pwsync's receiver running, or --notification-url)")
		return
	}
	want := "POST 201 (after the validation handshake) echoing resource and expiration; GET 200; PATCH 200 with the new expiration; DELETE 204; then GET 404"
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s, err := gr.g.Tracker.CreateSubscription(ctx, graph.Subscription{Resource: "/users", ChangeType: "updated,deleted",
		NotificationURL: gr.opts.NotificationURL, LifecycleNotificationURL: gr.opts.LifecycleURL,
		ClientState: hex.EncodeToString(secret), Expiration: exp})
	if err != nil {
		gr.fail(name, "POST: "+errText(err), want)
		return
	}
	deleted := false
	defer func() {
		if !deleted {
			_ = gr.g.Tracker.DeleteSubscription(context.WithoutCancel(ctx), s.ID)
		}
	}()
	steps := []string{fmt.Sprintf("POST: id=%s resource=%s expiration=%s", s.ID, s.Resource, s.Expiration.Format(time.RFC3339))}
	bad := func(why string) { gr.fail(name, strings.Join(append(steps, why), "; "), want) }
	if s.ID == "" || !strings.EqualFold(strings.TrimPrefix(s.Resource, "/"), "users") || absDuration(s.Expiration.Sub(exp)) > time.Minute {
		bad("answer does not echo the request")
		return
	}
	if got, err := gr.g.Tracker.GetSubscription(ctx, s.ID); err != nil || got.ID != s.ID {
		bad("GET: " + errText(err))
		return
	}
	exp2 := exp.Add(time.Hour)
	renewed, err := gr.g.Tracker.RenewSubscription(ctx, s.ID, exp2)
	if err != nil || absDuration(renewed.Expiration.Sub(exp2)) > time.Minute {
		bad(fmt.Sprintf("PATCH: %s, expiration %s", errText(err), renewed.Expiration.Format(time.RFC3339)))
		return
	}
	steps = append(steps, "PATCH: expiration "+renewed.Expiration.Format(time.RFC3339))
	if err := gr.g.Tracker.DeleteSubscription(ctx, s.ID); err != nil {
		bad("DELETE: " + errText(err))
		return
	}
	deleted = true
	if _, err := gr.g.Tracker.GetSubscription(ctx, s.ID); !graph.IsNotFound(err) {
		bad("GET after DELETE: " + errText(err))
		return
	}
	gr.pass(name, strings.Join(append(steps, "DELETE ok, then GET 404"), "; "))
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
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

// Directory roles that may write an unprivileged user's passwordProfile
// app-only (user: update, "at least the User Administrator" role), by
// role template ID.
var passwordWriterRoles = map[string]string{
	"fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
	"7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
	"62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
}

// directoryRole reads the roles assigned to the app's service principal:
// app permissions alone do not let it write passwordProfile.
func (gr *graphRun) directoryRole(ctx context.Context) {
	const name = "graph directory role"
	if gr.g.Batcher == nil {
		gr.skip(name, "no $batch client")
		return
	}
	want := "the app's service principal holds User Administrator (or Privileged Authentication Administrator / Global Administrator for admin targets): app-only passwordProfile writes need a directory role besides the permission"
	noRead := "cannot read the app's role assignments without Directory.Read.All (or Application.Read.All and RoleManagement.Read.Directory); with --write the passwordProfile check judges the role by its effect"
	get := func(u string) (graph.BatchResponse, error) {
		res, err := gr.g.Batcher.Batch(ctx, []graph.BatchRequest{{ID: "1", Method: http.MethodGet, URL: u}})
		if err != nil {
			return graph.BatchResponse{}, err
		}
		if len(res) != 1 {
			return graph.BatchResponse{}, fmt.Errorf("%d answers for 1 request", len(res))
		}
		if res[0].Err != nil {
			return res[0], res[0].Err
		}
		return res[0], nil
	}
	sp, err := get("/servicePrincipals(appId='" + gr.g.ClientID + "')?$select=id,appId")
	if graph.StatusOf(err) == http.StatusForbidden {
		gr.skip(name, "GET servicePrincipals: "+errText(err)+": "+noRead)
		return
	} else if err != nil {
		gr.fail(name, "GET /servicePrincipals(appId=...): "+errText(err), want)
		return
	}
	var spBody struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(sp.Body, &spBody) != nil || spBody.ID == "" {
		gr.fail(name, "GET /servicePrincipals(appId=...): no id in the answer", want)
		return
	}
	q := url.Values{}
	q.Set("$filter", "principalId eq '"+spBody.ID+"'")
	q.Set("$expand", "roleDefinition")
	ra, err := get("/roleManagement/directory/roleAssignments?" + q.Encode())
	if graph.StatusOf(err) == http.StatusForbidden {
		gr.skip(name, "GET roleAssignments: "+errText(err)+": "+noRead)
		return
	} else if err != nil {
		gr.fail(name, "GET /roleManagement/directory/roleAssignments: "+errText(err), want)
		return
	}
	var env struct {
		Value []struct {
			DirectoryScopeID string `json:"directoryScopeId"`
			RoleDefinition   struct {
				DisplayName string `json:"displayName"`
				TemplateID  string `json:"templateId"`
			} `json:"roleDefinition"`
		} `json:"value"`
	}
	if err := json.Unmarshal(ra.Body, &env); err != nil {
		gr.fail(name, "undecodable roleAssignments: "+err.Error(), want)
		return
	}
	var held []string
	writer := ""
	for _, a := range env.Value {
		held = append(held, fmt.Sprintf("%s (scope %s)", a.RoleDefinition.DisplayName, a.DirectoryScopeID))
		// Only a tenant-wide assignment covers every user; an
		// administrative unit's covers its members only.
		if r, ok := passwordWriterRoles[strings.ToLower(a.RoleDefinition.TemplateID)]; ok && a.DirectoryScopeID == "/" && writer == "" {
			writer = r
		}
	}
	seen := "service principal " + spBody.ID + " holds: " + strings.Join(held, ", ")
	if len(held) == 0 {
		seen = "service principal " + spBody.ID + " holds no directory role"
	}
	if writer == "" {
		gr.fail(name, seen, want)
		return
	}
	gr.pass(name, seen)
}

// passwordProfile PATCHes the flag only, as pwsync does for cloud-managed
// users, reads it back, and undoes it.
func (gr *graphRun) passwordProfile(ctx context.Context) {
	const name = "graph password profile"
	if !gr.opts.Write || gr.user == nil {
		gr.skip(name, "needs --write and --test-user (a cloud-only user)")
		return
	}
	u0 := gr.user
	want := "PATCH passwordProfile {forceChangePasswordNextSignIn} answers 204, and GET $select=passwordProfile tells whether it took (pwsync's read-back)"
	if u0.SyncEnabled {
		gr.fail(name, userSeen(u0), "--test-user must be cloud-only: a synced user's passwordProfile is on-premises mastered")
		return
	}
	if err := gr.g.Client.SetForceChange(ctx, u0.ID, true, false); err != nil {
		hint := ""
		if graph.StatusOf(err) == http.StatusForbidden {
			hint = " (403: the app needs User-PasswordProfile.ReadWrite.All and the User Administrator directory role)"
		}
		gr.fail(name, "PATCH: "+errText(err)+hint, want)
		return
	}
	back, err := gr.g.Client.GetUser(ctx, u0.ID)
	if err != nil {
		gr.fail(name, "PATCH 204; read-back: "+errText(err), want)
		return
	}
	var took string
	if back.ForceChangeNextSignIn {
		took = "the flag took"
	} else {
		took = fmt.Sprintf("the flag did NOT take (the flag-only PATCH changes nothing, microsoft-graph-docs#4267): pwsync's read-back sees it and uses actuator.cloud_managed.fallback (%s)", orDefault(gr.opts.Fallback, "chain"))
	}
	seen := "PATCH 204; read-back forceChangePasswordNextSignIn=" + fmt.Sprint(back.ForceChangeNextSignIn) + ": " + took
	if back.ForceChangeNextSignIn != u0.ForceChangeNextSignIn || back.ForceChangeWithMFA != u0.ForceChangeWithMFA {
		if err := gr.g.Client.SetForceChange(context.WithoutCancel(ctx), u0.ID, u0.ForceChangeNextSignIn, u0.ForceChangeWithMFA); err != nil {
			gr.fail(name, seen+"; undo PATCH: "+errText(err), "the test user's flags restored")
			return
		}
		after, err := gr.g.Client.GetUser(ctx, u0.ID)
		if err != nil || after.ForceChangeNextSignIn != u0.ForceChangeNextSignIn {
			gr.fail(name, seen+"; undo did not take: "+errText(err), "the test user's flags restored (clear forceChangePasswordNextSignIn in the admin center)")
			return
		}
		seen += "; undone"
	}
	gr.pass(name, seen)
}

// passwordProfileSynced PATCHes the flag of a synced user, as pwsync does
// with actuator.synced.try_cloud_flag: Graph refuses it with 400
// Request_BadRequest "... on-premises mastered ..." (pwsync then takes the
// chain), or, in tenants that allow it, answers 204 (then undone).
func (gr *graphRun) passwordProfileSynced(ctx context.Context) {
	const name = "graph password profile synced"
	if !gr.opts.Write || gr.synced == nil {
		gr.skip(name, "needs --write and --test-ad-user (synced to Entra)")
		return
	}
	u0 := gr.synced
	want := "a synced user's passwordProfile PATCH answers 204, or 400 Request_BadRequest whose message names on-premises mastered objects (what pwsync recognises: any other 400 is a dead letter)"
	err := gr.g.Client.SetForceChange(ctx, u0.ID, true, false)
	switch {
	case graph.IsOnPremMastered(err):
		gr.pass(name, errText(err)+": pwsync takes the synced chain")
		return
	case err != nil:
		gr.fail(name, errText(err), want)
		return
	}
	seen := "PATCH 204 (this tenant lets the app flag a synced user)"
	if back, err := gr.g.Client.GetUser(ctx, u0.ID); err == nil && back.ForceChangeNextSignIn != u0.ForceChangeNextSignIn {
		if err := gr.g.Client.SetForceChange(context.WithoutCancel(ctx), u0.ID, u0.ForceChangeNextSignIn, u0.ForceChangeWithMFA); err != nil {
			gr.fail(name, seen+"; undo PATCH: "+errText(err), "the synced test user's flags restored")
			return
		}
		seen += "; the flag took; undone"
	}
	gr.pass(name, seen)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// revokeSessions revokes the test user's sessions and waits for
// signInSessionsValidFromDateTime to move: pwsync tells a revoke whose
// answer was lost from one never made by it.
func (gr *graphRun) revokeSessions(ctx context.Context) {
	const name = "graph revoke sessions"
	if !gr.opts.Write || gr.user == nil {
		gr.skip(name, "needs --write and --test-user")
		return
	}
	want := "POST revokeSignInSessions 200, and signInSessionsValidFromDateTime moves forward"
	before, err := gr.g.Client.GetUser(ctx, gr.user.ID)
	if err != nil {
		gr.fail(name, "GET: "+errText(err), want)
		return
	}
	if err := gr.g.Client.RevokeSessions(ctx, gr.user.ID); err != nil {
		gr.fail(name, "POST: "+errText(err), want)
		return
	}
	var after *graph.User
	ok, err := poll(ctx, gr.opts.Wait, func() (bool, error) {
		u, err := gr.g.Client.GetUser(ctx, gr.user.ID)
		if err != nil {
			return false, err
		}
		after = u
		return u.SessionsValidFrom.After(before.SessionsValidFrom), nil
	})
	switch {
	case err != nil:
		gr.fail(name, "GET after POST: "+errText(err), want)
	case !ok:
		gr.fail(name, fmt.Sprintf("POST ok; signInSessionsValidFromDateTime still %s after %s", after.SessionsValidFrom.Format(time.RFC3339), gr.opts.Wait), want)
	default:
		gr.pass(name, fmt.Sprintf("POST ok; signInSessionsValidFromDateTime %s -> %s (the test user signs in again; nothing to undo)",
			before.SessionsValidFrom.Format(time.RFC3339), after.SessionsValidFrom.Format(time.RFC3339)))
	}
}

// groupMember adds the test user to the test group and removes it, each
// twice (pwsync's writes are idempotent), then restores the membership.
func (gr *graphRun) groupMember(ctx context.Context) {
	const name = "graph group member"
	if !gr.opts.Write || gr.user == nil || gr.opts.TestGroup == "" || gr.g.Directory == nil {
		gr.skip(name, "needs --write, --test-user and a group (--test-group or actuator.synced.pending_group_id)")
		return
	}
	want := "POST members/$ref 204 (again: 400 'already exist', taken as success); DELETE $ref 204 (again: 404, taken as success); members list follows"
	gid, uid := gr.opts.TestGroup, gr.user.ID
	isMember := func() (bool, error) {
		ms, err := gr.g.Directory.TransitiveGroupMembers(ctx, gid)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(ms, func(u graph.User) bool { return u.ID == uid }), nil
	}
	was, err := isMember()
	if err != nil {
		gr.fail(name, "GET transitiveMembers: "+errText(err), want)
		return
	}
	var steps []string
	step := func(what string, fn func() error, member bool) bool {
		if err := fn(); err != nil {
			gr.fail(name, strings.Join(append(steps, what+": "+errText(err)), "; "), want)
			return false
		}
		ok, err := poll(ctx, gr.opts.Wait, func() (bool, error) {
			m, err := isMember()
			return m == member, err
		})
		if err != nil || !ok {
			gr.fail(name, strings.Join(append(steps, fmt.Sprintf("%s ok but member=%t not seen within %s: %s", what, member, gr.opts.Wait, errText(err))), "; "), want)
			return false
		}
		steps = append(steps, what+" ok")
		return true
	}
	add := func() error { return gr.g.Client.AddGroupMember(ctx, gid, uid) }
	del := func() error { return gr.g.Client.RemoveGroupMember(ctx, gid, uid) }
	defer func() {
		// Undo: the membership as it was.
		ctx := context.WithoutCancel(ctx)
		if was {
			_ = gr.g.Client.AddGroupMember(ctx, gid, uid)
		} else {
			_ = gr.g.Client.RemoveGroupMember(ctx, gid, uid)
		}
	}()
	if step("add", add, true) && step("add again", add, true) && step("remove", del, false) && step("remove again", del, false) {
		gr.pass(name, fmt.Sprintf("group %s: %s; membership restored (member before: %t)", gid, strings.Join(steps, ", "), was))
	}
}

// permission checks the token's roles only: sending would notify someone.
// unseen, when set, is why a missing role cannot be judged (SKIP).
func (gr *graphRun) permission(name string, used bool, key string, roles []string, what, unseen string) {
	switch {
	case !used:
		gr.skip(name, key+" is not used")
	case gr.roles == nil:
		gr.skip(name, "no token")
	case slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(gr.roles, r) }):
		gr.pass(name, "token roles hold "+strings.Join(roles, " or ")+" (a permission check only: nothing is sent)")
	case unseen != "":
		gr.skip(name, unseen)
	default:
		gr.fail(name, "token roles: "+strings.Join(gr.roles, ", "), what)
	}
}
