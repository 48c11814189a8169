package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/shared/adtest"
)

const chromiumPath = "/usr/bin/chromium"

// browser starts Debian's Chromium headless with a fresh profile that
// trusts exactly the admin listener's key (by SPKI pin) and nothing else.
func browser(t *testing.T, certFile string) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("PWSYNC_REQUIRE_BROWSER") == "1" {
			t.Fatalf("%s missing: apt-get install -y chromium", chromiumPath)
		}
		t.Skipf("%s missing (apt-get install -y chromium)", chromiumPath)
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1366, 768),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// waitJS waits until the JavaScript expression is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, text)
	}
}

// screenshot saves the viewport (1366x768) to $PWSYNC_SCREENSHOTS_DIR
// (docs/ when refreshing them) or a temp dir.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("PWSYNC_SCREENSHOTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleInBrowser drives the console in Chromium against pwsync with
// Samba AD and the Graph simulator: sign in, watch a helpdesk reset arrive
// in the live view, open the user's timeline, the policy, and run a small
// campaign from preview to report when the campaign API is served.
func TestConsoleInBrowser(t *testing.T) {
	s := newStack(t, stackOpts{})
	a := s.withAdmin(t)
	a.ApproveAbove = 1 // the two-user campaign below needs a second person
	alice := s.dc.CreateUser(t, s.ou, "con-alice", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	bob := s.dc.CreateUser(t, s.ou, "con-bob", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	carol := s.dc.CreateUser(t, s.ou, "con-carol", adtest.UserOpts{Password: "Start.Passw0rd-1"})
	aliceID := s.cloudUser(alice, false)
	s.cloudUser(bob, false)
	s.cloudUser(carol, false)
	s.startInProcess(t)
	ctx := browser(t, a.Cert)
	js := strconv.Quote

	t.Run("wrong token is refused", func(t *testing.T) {
		if err := do(ctx, chromedp.Navigate(a.URL()+"/"), chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), "pwsa_not-a-token"), chromedp.Click(chromedp.CSS("#login-form button"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the refusal", `document.getElementById('login-error').textContent.includes('refused')`)
	})
	t.Run("sign in", func(t *testing.T) {
		if err := do(ctx, chromedp.SendKeys(chromedp.ID("token"), a.Operator),
			chromedp.Click(chromedp.CSS("#login-form button"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "signed in", `document.getElementById('who').textContent.includes('e2e-operator')`)
		waitJS(t, ctx, "the live view", `!!document.getElementById('live-table')`)
	})
	t.Run("helpdesk reset appears in the live view", func(t *testing.T) {
		s.dc.ForceChange(t, alice.DN)
		s.waitWrites(t, aliceID, []string{"PATCH force=true 204"}, 0)
		waitJS(t, ctx, "the AD event", fmt.Sprintf(`[...document.querySelectorAll('#live-table tbody tr')].some(r => r.textContent.includes(%s) && r.textContent.includes('must change'))`, js(alice.UPN)))
		waitJS(t, ctx, "the action outcome", fmt.Sprintf(`[...document.querySelectorAll('#live-table tbody tr')].some(r => r.textContent.includes(%s) && r.textContent.includes('require_password_change') && r.textContent.includes('ok'))`, js(alice.UPN)))
		waitJS(t, ctx, "the latency point", `/[1-9]\d* Graph write/.test(document.getElementById('latency-summary').textContent)`)
		screenshot(t, ctx, "console-live.png")
	})
	t.Run("user timeline", func(t *testing.T) {
		// The DC is shared: other tests' users pass by too; open alice's link.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { [...document.querySelectorAll('#live-table a')].find(a => a.textContent === %s).click(); return true })()`, js(alice.UPN)))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the timeline", `!!document.getElementById('timeline') && document.getElementById('timeline').textContent.includes('require_password_change')`)
		waitJS(t, ctx, "the joined cloud account", fmt.Sprintf(`document.getElementById('user-detail').textContent.includes(%s)`, js(aliceID)))
		screenshot(t, ctx, "console-user.png")
		// Search by name.
		if err := do(ctx, chromedp.Navigate(a.URL()+"/#user"), chromedp.WaitVisible(chromedp.ID("user-q")),
			chromedp.SendKeys(chromedp.ID("user-q"), "con-bob"), chromedp.Click(chromedp.CSS(`form[role=search] button`))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the search result", fmt.Sprintf(`document.getElementById('user-results').textContent.includes(%s)`, js(bob.UPN)))
	})
	t.Run("policy and explain", func(t *testing.T) {
		if err := do(ctx, chromedp.Navigate(a.URL()+"/#policy"), chromedp.WaitVisible(chromedp.ID("explain-upn")),
			chromedp.SendKeys(chromedp.ID("explain-upn"), alice.UPN), chromedp.Click(chromedp.CSS(`#view form button`))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the rules", `!document.getElementById('policy-text').textContent.includes('Loading')`)
		waitJS(t, ctx, "the explanation", `document.getElementById('explain-text').textContent.includes('Scope:')`)
		screenshot(t, ctx, "console-policy.png")
	})
	t.Run("campaign from preview through a second person's approval to report", func(t *testing.T) {
		var status int
		if err := a.client(t, a.Viewer).Do(context.Background(), "GET", "/api/v1/campaigns", nil, nil); err != nil {
			status = -1
		}
		if status != 0 {
			t.Skip("the campaign API is not served by this build")
		}
		if err := do(ctx, chromedp.Navigate(a.URL()+"/#campaigns"), chromedp.WaitVisible(chromedp.ID("c-name")),
			chromedp.SendKeys(chromedp.ID("c-name"), "browser test"), chromedp.SendKeys(chromedp.ID("c-reason"), "INC-1"),
			chromedp.SendKeys(chromedp.ID("c-upns"), bob.UPN+"\n"+carol.UPN+"\nnobody@example.test"), chromedp.Click(chromedp.ID("c-create"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the preview", `(document.getElementById('c-state')||{}).textContent === 'previewed' && document.getElementById('c-unmatched').textContent.includes('nobody@example.test')`)
		// Plural-aware sentences, no dangling separators.
		const wantPreview = "2 users selected: 2 synced. Steps: AD must-change (pwdLastSet=0) for 2 users. Nobody excluded. 1 UPN matched nobody."
		waitJS(t, ctx, "the preview counts", fmt.Sprintf(`document.getElementById('c-preview-counts').textContent === %s`, js(wantPreview)))
		// Above the threshold: the creator (who holds the approver role too)
		// sees a disabled Approve and no Start; the server refuses as well.
		waitJS(t, ctx, "the creator's approve refused", `document.getElementById('c-approve').disabled && !document.getElementById('c-start') && document.getElementById('c-approve-why').textContent.includes('another person')`)
		screenshot(t, ctx, "console-campaign-preview.png")
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash.split('/')[1]`))
		if err != nil || id == "" {
			t.Fatalf("campaign id from %q: %v", id, err)
		}
		var apiErr *adminapi.APIError
		if err := a.client(t, a.Operator).Do(context.Background(), "POST", "/api/v1/campaigns/"+id+"/approve", nil, nil); !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
			t.Fatalf("the creator approving through the API: %v", err)
		}

		// A second person signs in and approves in the browser.
		signInAs := func(tok, name string) {
			t.Helper()
			if err := do(ctx, chromedp.Click(chromedp.CSS("#who button")), chromedp.WaitVisible(chromedp.ID("token")),
				chromedp.SendKeys(chromedp.ID("token"), tok), chromedp.Click(chromedp.CSS("#login-form button"))); err != nil {
				t.Fatal(err)
			}
			waitJS(t, ctx, "signed in as "+name, fmt.Sprintf(`document.getElementById('who').textContent.includes(%s)`, js(name)))
		}
		signInAs(a.Approver, "e2e-approver")
		waitJS(t, ctx, "an enabled approve", `(document.getElementById('c-approve')||{}).disabled === false && !document.getElementById('c-start')`)
		if err := do(ctx, chromedp.Click(chromedp.ID("c-approve"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the approval", `(document.getElementById('c-state')||{}).textContent === 'approved' && document.querySelector('#campaign').textContent.includes('approved by e2e-approver')`)

		// The operator starts it.
		signInAs(a.Operator, "e2e-operator")
		waitJS(t, ctx, "the start button", `!!document.getElementById('c-start')`)
		if err := do(ctx, chromedp.Click(chromedp.ID("c-start"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the campaign to finish", `(document.getElementById('c-state')||{}).textContent === 'done'`)
		waitJS(t, ctx, "two users done", `document.getElementById('c-counts').textContent.startsWith('2 done, 0 failed, 0 remaining of 2. 0 Graph writes, 2 LDAP writes.')`)
		if err := do(ctx, chromedp.Click(chromedp.ID("c-report-csv"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the report download", `document.getElementById('status').textContent.includes('.csv')`)
		screenshot(t, ctx, "console-campaign.png")
	})
}

// do runs browser steps with a bound, so that a missing element fails the
// test instead of hanging it.
func do(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := chromedp.Do(ctx, steps...)
	if err != nil {
		text, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		return fmt.Errorf("%w\npage: %s", err, text)
	}
	return nil
}
