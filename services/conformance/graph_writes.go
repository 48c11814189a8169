// Graph write and permission checks: the app's directory role, passwordProfile
// writes, session revocation, group membership, notification permissions.

package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

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
