package msgraph_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// receiver answers Graph's validation handshake and accepts notifications.
func receiver(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("validationToken"); tok != "" {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, tok)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestSubscriptionLifecycle(t *testing.T) {
	rcv := receiver(t)
	s := startSim(t, graphsim.Options{NotificationClient: rcv.Client()})
	c := newClient(t, s, nil)
	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	sub, err := c.CreateSubscription(ctx(t), graph.Subscription{Resource: "/users", ChangeType: "updated,deleted",
		NotificationURL: rcv.URL + "/n", LifecycleNotificationURL: rcv.URL + "/l", ClientState: "cs-123", Expiration: exp})
	if err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	if sub.ID == "" || sub.ClientState != "cs-123" || !sub.Expiration.Equal(exp) || sub.LifecycleNotificationURL != rcv.URL+"/l" {
		t.Fatalf("created: %+v", sub)
	}
	if subs := s.Subscriptions(); len(subs) != 1 || subs[0].ClientState != "cs-123" || subs[0].ChangeType != "updated,deleted" {
		t.Fatalf("simulator has %+v", subs)
	}

	got, err := c.GetSubscription(ctx(t), sub.ID)
	if err != nil || got.ID != sub.ID || !got.Expiration.Equal(exp) {
		t.Fatalf("GetSubscription: %+v, %v", got, err)
	}
	later := exp.Add(time.Hour)
	if got, err = c.RenewSubscription(ctx(t), sub.ID, later); err != nil || !got.Expiration.Equal(later) {
		t.Fatalf("RenewSubscription: %+v, %v", got, err)
	}
	if err := c.ReauthorizeSubscription(ctx(t), sub.ID); err != nil {
		t.Fatalf("ReauthorizeSubscription: %v", err)
	}
	if s.Subscriptions()[0].Reauthorized.IsZero() {
		t.Fatal("not reauthorized")
	}
	if err := c.DeleteSubscription(ctx(t), sub.ID); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	if _, err := c.GetSubscription(ctx(t), sub.ID); !graph.IsNotFound(err) {
		t.Fatalf("GetSubscription after delete: want 404, got %v", err)
	}
	if _, err := c.RenewSubscription(ctx(t), sub.ID, later); !graph.IsNotFound(err) {
		t.Fatalf("RenewSubscription after delete: want 404, got %v", err)
	}
}

func TestCreateSubscriptionValidationFails(t *testing.T) {
	bad := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	defer bad.Close()
	s := startSim(t, graphsim.Options{NotificationClient: bad.Client()})
	c := newClient(t, s, nil)
	_, err := c.CreateSubscription(ctx(t), graph.Subscription{Resource: "/users", ChangeType: "updated,deleted",
		NotificationURL: bad.URL, ClientState: "x", Expiration: time.Now().Add(time.Hour)})
	if graph.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("want 400 when the handshake fails, got %v", err)
	}
}

func TestUsersDelta(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	const n = 250 // three pages of the simulator's 100
	for i := range n {
		s.PutUser(graphsim.User{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), UserPrincipalName: fmt.Sprintf("u%d@contoso.test", i),
			AccountEnabled: true, PasswordPolicies: "None"})
	}
	c := newClient(t, s, nil)

	round := func(link string) (users []graph.DeltaUser, deltaLink string, pages int) {
		t.Helper()
		for {
			p, err := c.UsersDelta(ctx(t), link)
			if err != nil {
				t.Fatalf("UsersDelta(%q): %v", link, err)
			}
			pages++
			users = append(users, p.Users...)
			if p.DeltaLink != "" {
				return users, p.DeltaLink, pages
			}
			link = p.NextLink
		}
	}
	users, dl, pages := round("")
	if len(users) != n || pages != 3 {
		t.Fatalf("full round: %d users in %d pages", len(users), pages)
	}
	// Never set on these users, so left out by Graph's delta: absent, not null.
	never := []string{"lastPasswordChangeDateTime", "mail", "onPremisesImmutableId", "onPremisesSyncEnabled", "preferredLanguage"}
	if u := users[0]; !slices.Equal(slices.Sorted(slices.Values(u.Absent)), never) || u.Removed || !u.AccountEnabled || u.PasswordPolicies != "None" || u.UPN == "" {
		t.Fatalf("first user: %+v", u)
	}
	first := requests(s, "GET", "/users/delta")[0]
	for _, p := range graph.DeltaSelect {
		if !strings.Contains(first.Query, p) {
			t.Fatalf("first request must $select %s: %q", p, first.Query)
		}
	}

	changed := fmt.Sprintf("00000000-0000-4000-8000-%012d", 7)
	u, _ := s.User(changed)
	u.PasswordPolicies = "DisablePasswordExpiration"
	s.PutUser(u)
	s.DeleteUser(fmt.Sprintf("00000000-0000-4000-8000-%012d", 8))
	users, dl2, _ := round(dl)
	if len(users) != 2 {
		t.Fatalf("incremental round: %+v", users)
	}
	if users[0].ID != changed || users[0].PasswordPolicies != "DisablePasswordExpiration" || users[0].Removed {
		t.Errorf("changed user: %+v", users[0])
	}
	if !users[1].Removed {
		t.Errorf("deleted user: %+v", users[1])
	}
	if users, _, _ := round(dl2); len(users) != 0 {
		t.Errorf("nothing changed, got %+v", users)
	}

	s.ExpireDeltaTokens()
	_, err := c.UsersDelta(ctx(t), dl2)
	// Identity resources answer 400 syncStateNotFound, not 410.
	if !graph.IsSyncStateNotFound(err) || graph.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("expired token: want IsSyncStateNotFound (400), got %v", err)
	}
	t.Logf("expired token: %v", err)

	// A stored link pointing anywhere else is not followed with our token.
	if _, err := c.UsersDelta(ctx(t), "https://evil.example/v1.0/users/delta?$deltatoken=x"); graph.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("foreign link: %v", err)
	}
}
