package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/testrig/adminapitest"
)

// adminStack is the admin API part of a stack: TLS files and tokens.
type adminStack struct {
	Addr, Cert, Key, CA string
	Tokens              []adminapi.Token
	Operator, Viewer    string // tokens
	Approver            string // a second person: approver role only
	// ApproveAbove sets campaigns.approval_threshold when > 0.
	ApproveAbove int
}

// withAdmin turns the admin API on in s's config (call before start).
func (s *stack) withAdmin(t testing.TB) *adminStack {
	t.Helper()
	a := &adminStack{Addr: freeAddr(t)}
	a.CA, a.Cert, a.Key = adminapitest.TLSFiles(t)
	var op, vw adminapi.Token
	a.Operator, op = adminapitest.NewToken(t, "e2e-operator", adminapi.RoleOperator, adminapi.RoleApprover)
	a.Viewer, vw = adminapitest.NewToken(t, "e2e-viewer", adminapi.RoleViewer)
	var ap adminapi.Token
	a.Approver, ap = adminapitest.NewToken(t, "e2e-approver", adminapi.RoleApprover)
	a.Tokens = []adminapi.Token{op, vw, ap}
	s.admin = a
	return a
}

func (a *adminStack) URL() string { return "https://" + a.Addr }

func (a *adminStack) client(t testing.TB, token string) *adminapi.Client {
	t.Helper()
	c, err := adminapi.NewClient(a.URL(), token, a.CA)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAdminAPIServedByRun: `pwsync run` with admin.enabled serves the API
// over TLS on its own listener, with the configured tokens.
func TestAdminAPIServedByRun(t *testing.T) {
	s := newStack(t, stackOpts{})
	a := s.withAdmin(t)
	s.startInProcess(t)
	ctx := context.Background()
	var me struct {
		Name  string          `json:"name"`
		Roles []adminapi.Role `json:"roles"`
	}
	if err := a.client(t, a.Viewer).Do(ctx, "GET", "/api/v1/whoami", nil, &me); err != nil || me.Name != "e2e-viewer" {
		t.Fatalf("whoami: %+v %v", me, err)
	}
	var apiErr *adminapi.APIError
	if err := a.client(t, "pwsa_wrong").Do(ctx, "GET", "/api/v1/whoami", nil, nil); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestAdminTokenCommand(t *testing.T) {
	var out strings.Builder
	if err := dispatch(context.Background(), []string{"admin", "token", "--name", "alice", "--roles", "operator,approver"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	tok, hash := "", ""
	for _, f := range strings.Fields(out.String()) {
		switch {
		case len(f) > len(adminapi.TokenPrefix) && f[:len(adminapi.TokenPrefix)] == adminapi.TokenPrefix:
			tok = f
		case len(f) == 64:
			hash = f
		}
	}
	if tok == "" || hash != adminapi.HashToken(tok) {
		t.Fatalf("token %q and hash %q do not match:\n%s", tok, hash, out.String())
	}
	for _, bad := range [][]string{{"admin", "token", "--roles", "viewer"}, {"admin", "token", "--name", "x", "--roles", "root"}} {
		if err := dispatch(context.Background(), bad, &out, &out); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
