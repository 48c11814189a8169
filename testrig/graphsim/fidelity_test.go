package graphsim

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the behaviours where the simulator follows Graph rather than a
// kinder world (docs/graph-fidelity.md lists each with its source).

func TestDeltaLeavesOutNeverSetProperties(t *testing.T) {
	e := newEnv(t, Options{})
	const id = "00000000-0000-0000-0000-0000000000c1"
	e.srv.PutUser(User{ID: id, UserPrincipalName: "c1@contoso.com", AccountEnabled: true}) // cloud-only, no policies
	first := "/v1.0/users/delta?$select=id,accountEnabled,passwordPolicies,onPremisesSyncEnabled"
	rows, _, link := deltaRound(t, e, first)
	if len(rows) != 1 {
		t.Fatalf("first round %v", rows)
	}
	// Never set: left out, not null ("If the property has never been set
	// before it will not be included in the response").
	if got := keys(rows[0]); !slices.Equal(got, []string{"accountEnabled", "id"}) {
		t.Fatalf("first round keys %v", got)
	}

	wantStatus(t, e.do("PATCH", "/v1.0/users/"+id, map[string]any{"passwordPolicies": "DisablePasswordExpiration"}), 204)
	rows, _, link = deltaRound(t, e, link)
	if len(rows) != 1 || rows[0]["passwordPolicies"] != "DisablePasswordExpiration" {
		t.Fatalf("after set: %v", rows)
	}

	// Cleared: present, as null, in full and minimal rounds alike.
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+id, map[string]any{"passwordPolicies": nil}), 204)
	for _, prefer := range []string{"return=representation", "return=minimal"} {
		rows, _, _ := deltaRound(t, e, link, "Prefer", prefer)
		v, present := rows[0]["passwordPolicies"]
		if len(rows) != 1 || !present || v != nil {
			t.Fatalf("%s: a cleared property must read null: %v", prefer, rows)
		}
		if _, present := rows[0]["onPremisesSyncEnabled"]; present {
			t.Fatalf("%s: never-set onPremisesSyncEnabled present: %v", prefer, rows)
		}
	}
	// GET still reads a never-set property as null: only delta leaves it out.
	r := e.do("GET", "/v1.0/users/"+id+"?$select=onPremisesSyncEnabled", nil)
	if v, ok := r.json["onPremisesSyncEnabled"]; !ok || v != nil {
		t.Fatalf("GET %s", r.raw)
	}
}

func TestPasswordProfileNullWithoutProfile(t *testing.T) {
	e := newEnv(t, Options{})
	cloud, synced := seedUsers(e.srv) // cloud has no password; synced has one
	read := func(id string) any {
		r := e.do("GET", "/v1.0/users/"+id+"?$select=passwordProfile", nil)
		wantStatus(t, r, 200)
		v, ok := r.json["passwordProfile"]
		if !ok {
			t.Fatalf("passwordProfile missing: %s", r.raw)
		}
		return v
	}
	if v := read(cloud.ID); v != nil {
		t.Fatalf("user without a profile: %v, want null", v)
	}
	if v, ok := read(synced.ID).(map[string]any); !ok || v["password"] != nil {
		t.Fatalf("user with a password: %v", v)
	}
	withPassword := map[string]any{"passwordProfile": map[string]any{"password": "Temp-Passw0rd!", "forceChangePasswordNextSignIn": false}}
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, withPassword), 204)
	if v, ok := read(cloud.ID).(map[string]any); !ok || v["forceChangePasswordNextSignIn"] != false {
		t.Fatalf("after a password write: %v", v)
	}
}

func TestPasswordWriteDirectoryRoles(t *testing.T) {
	flag := map[string]any{"passwordProfile": map[string]any{"password": "Temp-Passw0rd!", "forceChangePasswordNextSignIn": true}}
	tests := []struct {
		name      string
		appRoles  []string // nil: the default (User Administrator)
		userRoles []string
		body      map[string]any
		want      int
	}{
		{"default role, plain user", nil, nil, flag, 204},
		{"default role, helpdesk admin target", nil, []string{"Helpdesk Administrator"}, flag, 204},
		{"default role, global admin target", nil, []string{RoleGlobalAdministrator}, flag, 403},
		{"default role, one privileged role among others", nil, []string{"Reports Reader", "Security Administrator"}, flag, 403},
		{"no directory role", []string{}, nil, flag, 403},
		{"Privileged Authentication Administrator, global admin target", []string{RolePrivilegedAuthAdministrator}, []string{RoleGlobalAdministrator}, flag, 204},
		{"no role needed for other properties", []string{}, []string{RoleGlobalAdministrator}, map[string]any{"displayName": "Renamed"}, 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{DirectoryRoles: tt.appRoles})
			cloud, _ := seedUsers(e.srv)
			if err := e.srv.SetUserDirectoryRoles(cloud.ID, tt.userRoles...); err != nil {
				t.Fatal(err)
			}
			r := e.do("PATCH", "/v1.0/users/"+cloud.ID, tt.body)
			if tt.want == 403 {
				wantError(t, r, 403, codeAuthDenied)
				if got := e.user(cloud.ID); got != cloud {
					t.Fatalf("refused write changed the user: %+v", got)
				}
				return
			}
			wantStatus(t, r, tt.want)
		})
	}
}

// rawBatchOrder sends a batch of n GETs and returns the response ids in
// the order they came.
func rawBatchOrder(t *testing.T, e *env, n int) []string {
	t.Helper()
	var items []map[string]any
	for i := range n {
		items = append(items, map[string]any{"id": fmt.Sprint(i + 1), "method": "GET", "url": "/users?$select=id"})
	}
	r := e.do("POST", "/v1.0/$batch", map[string]any{"requests": items})
	wantStatus(t, r, 200)
	var out struct{ Responses []struct{ ID string } }
	if err := json.Unmarshal(r.raw, &out); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range out.Responses {
		ids = append(ids, it.ID)
	}
	return ids
}

func TestBatchResponsesOutOfOrder(t *testing.T) {
	inOrder := []string{"1", "2", "3", "4", "5"}
	e := newEnv(t, Options{})
	for range 20 { // every time: a client matching by position must always fail
		got := rawBatchOrder(t, e, 5)
		if slices.Equal(got, inOrder) {
			t.Fatalf("responses in request order: %v", got)
		}
		if sorted := slices.Sorted(slices.Values(got)); !slices.Equal(sorted, inOrder) {
			t.Fatalf("responses %v: want each id once", got)
		}
	}
	kind := newEnv(t, Options{BatchInOrder: true})
	if got := rawBatchOrder(t, kind, 5); !slices.Equal(got, inOrder) {
		t.Fatalf("BatchInOrder: %v", got)
	}
}

func TestResourceUnitQuotaThrottlesReads(t *testing.T) {
	e := newEnv(t, Options{ResourceUnitBudget: 5, ResourceUnitWindow: time.Minute})
	cloud, _ := seedUsers(e.srv)
	for range 5 { // GET with $select: 1 unit each
		wantStatus(t, e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=id", nil), 200)
	}
	r := e.do("GET", "/v1.0/users/"+cloud.ID+"?$select=id", nil)
	wantError(t, r, 429, codeTooManyRequests)
	if r.header.Get("Retry-After") == "" || r.header.Get("x-ms-throttle-information") != "ResourceUnitLimitExceeded" ||
		!strings.HasPrefix(r.header.Get("x-ms-throttle-scope"), "Tenant_Application/ReadWrite/") {
		t.Fatalf("429 headers %v", r.header)
	}
	// Outside the identity quota: subscriptions are not throttled by it.
	wantStatus(t, e.do("GET", "/v1.0/subscriptions", nil), 200)
}

func TestResourceUnitQuotaByTenantSize(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tc := range []struct{ users, want int }{{0, 3500}, {49, 3500}, {50, 5000}, {500, 5000}, {501, 8000}} {
		for i := len(e.srv.store.users); i < tc.users; i++ {
			e.srv.PutUser(User{UserPrincipalName: fmt.Sprintf("u%d@contoso.com", i)})
		}
		if got := e.srv.resourceUnitLimit(); got != tc.want {
			t.Errorf("%d users: quota %d, want %d", tc.users, got, tc.want)
		}
	}
	if got := newEnv(t, Options{ResourceUnitBudget: -1}).srv.resourceUnitLimit(); got != 0 {
		t.Errorf("negative budget: %d, want unlimited", got)
	}
}

func TestTenantWriteQuota(t *testing.T) {
	e := newEnv(t, Options{TenantWriteBudget: 10, TenantWriteWindow: time.Minute})
	cloud, _ := seedUsers(e.srv)
	if n := e.srv.UseTenantWrites(9); n != 9 { // other apps of the tenant
		t.Fatalf("UseTenantWrites: %d", n)
	}
	rename := map[string]any{"displayName": "x"}
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, rename), 204)
	r := e.do("PATCH", "/v1.0/users/"+cloud.ID, rename)
	wantError(t, r, 429, codeTooManyRequests)
	if r.header.Get("Retry-After") == "" || !strings.HasPrefix(r.header.Get("x-ms-throttle-scope"), "Tenant/Write/") {
		t.Fatalf("429 headers %v", r.header)
	}
	if st := e.srv.Stats(); st.Writes != 1 || st.Throttled != 1 {
		t.Fatalf("stats %+v: the tenant's refusal must not spend the app's quota", st)
	}
}

func TestNotificationDelayByDefault(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{})
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	start := time.Now()
	e.srv.PutUser(User{UserPrincipalName: "new@contoso.com"})
	rc.notes(t, 1)
	if d := time.Since(start); d < DefaultNotificationDelay {
		t.Fatalf("notified after %v, before the default delay %v", d, DefaultNotificationDelay)
	}
}

func TestNotificationRetriedBeyondFiveTries(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{NotificationDelay: -1})
	cloud, _ := seedUsers(e.srv)
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	rc.mu.Lock()
	rc.failures = 5 // the old simulator gave up after 5 tries
	rc.mu.Unlock()
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"displayName": "Retried"}), 204)
	rc.notes(t, 1)
	d := e.srv.Deliveries()
	if last := d[len(d)-1]; last.Status != 202 || last.Attempt != 6 {
		t.Fatalf("deliveries %v", d)
	}
}

func TestNotificationRetryStopsAfterRetryFor(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{NotificationDelay: -1, NotificationRetryFor: 700 * time.Millisecond})
	cloud, _ := seedUsers(e.srv)
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	rc.mu.Lock()
	rc.failures = 1000
	rc.mu.Unlock()
	wantStatus(t, e.do("PATCH", "/v1.0/users/"+cloud.ID, map[string]any{"displayName": "Lost"}), 204)
	time.Sleep(2 * time.Second)
	d := e.srv.Deliveries()
	// Tries at 0, 0.25 and 0.75 s would be the third past 0.7 s: two tries.
	if len(d) != 2 {
		t.Fatalf("%d deliveries within the retry window, want 2: %v", len(d), d)
	}
}

func TestPurgedUserIsDeleted(t *testing.T) {
	e, rc, ts := newReceiverEnv(t, Options{NotificationDelay: -1})
	cloud, synced := seedUsers(e.srv)
	wantStatus(t, e.do("POST", "/v1.0/subscriptions", subBody(ts.URL+"/hook", nil)), 201)
	_, _, link := deltaRound(t, e, "/v1.0/users/delta?$select=id")

	e.srv.DeleteUser(cloud.ID) // soft: "updated", then purged: "deleted"
	if !e.srv.PurgeUser(cloud.ID) || !e.srv.PurgeUser(synced.UserPrincipalName) || e.srv.PurgeUser(cloud.ID) {
		t.Fatal("PurgeUser: want true, true, false")
	}
	notes := rc.notes(t, 3)
	var got []string
	for _, n := range notes {
		got = append(got, fmt.Sprintf("%s %s", n["changeType"], n["resource"]))
	}
	want := []string{"updated Users/" + cloud.ID, "deleted Users/" + cloud.ID, "deleted Users/" + synced.ID}
	if !slices.Equal(got, want) {
		t.Fatalf("notifications %v, want %v", got, want)
	}
	rows, _, _ := deltaRound(t, e, link)
	for _, r := range rows {
		if fmt.Sprint(r["@removed"]) != "map[reason:deleted]" {
			t.Fatalf("purged row %v", r)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("rows %v", rows)
	}
}

func TestTimeScaled(t *testing.T) {
	o := Options{WriteBudget: 3000}.TimeScaled(3 * time.Second) // 50 times faster
	if o.WriteWindow != 3*time.Second || o.TenantWriteWindow != 6*time.Second || o.ResourceUnitWindow != 200*time.Millisecond || o.WriteBudget != 3000 {
		t.Fatalf("%+v", o)
	}
}

func TestDirectoryRolesReadable(t *testing.T) {
	reader := append(slices.Clone(DefaultRoles), "Directory.Read.All")
	e := newEnv(t, Options{Roles: reader})
	r := e.do("GET", "/v1.0/servicePrincipals(appId='"+e.srv.ClientID()+"')?$select=id,appId", nil)
	wantStatus(t, r, 200)
	sp, _ := r.json["id"].(string)
	if sp == "" || r.json["appId"] != e.srv.ClientID() {
		t.Fatalf("service principal %s", r.raw)
	}
	wantError(t, e.do("GET", "/v1.0/servicePrincipals(appId='someone-else')", nil), 404, codeNotFound)
	assignments := func() []any {
		r := e.do("GET", "/v1.0/roleManagement/directory/roleAssignments?$filter="+url.QueryEscape("principalId eq '"+sp+"'")+"&$expand=roleDefinition", nil)
		wantStatus(t, r, 200)
		return r.json["value"].([]any)
	}
	v := assignments()
	if len(v) != 1 {
		t.Fatalf("assignments %v", v)
	}
	a := v[0].(map[string]any)
	def := a["roleDefinition"].(map[string]any)
	if a["directoryScopeId"] != "/" || def["displayName"] != RoleUserAdministrator || def["templateId"] != "fe930be7-5e62-47db-91af-98c3a49a38b1" {
		t.Fatalf("assignment %v", a)
	}
	e.srv.SetDirectoryRoles()
	if v := assignments(); len(v) != 0 {
		t.Fatalf("no role, yet %v", v)
	}
	// Without a directory read permission (pwsync's own roles): 403.
	plain := newEnv(t, Options{})
	wantError(t, plain.do("GET", "/v1.0/servicePrincipals(appId='"+plain.srv.ClientID()+"')", nil), 403, codeAuthDenied)
}
