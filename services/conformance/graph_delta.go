// Graph delta query and change-notification subscription checks.

package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

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
