package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/pwsync/pwsync/shared/adminapi"
	"github.com/pwsync/pwsync/testrig/adtest"
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
	if err := chromedp.Do(ctx, laptop()); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// laptop is the page area of a 1366x768 laptop screen under the browser's
// own bars.
func laptop() chromedp.Action[chromedp.Void] { return chromedp.EmulateViewport(1366, 680) }

// waitJS waits until the JavaScript expression is truthy.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, text)
	}
}

// clickJS clicks the first element of the CSS selector whose text is
// text, as soon as there is one, in one step of the page's own thread (a
// live table may replace its rows between a separate find and click).
func clickJS(t *testing.T, ctx context.Context, what, selector, text string) {
	t.Helper()
	waitJS(t, ctx, what, fmt.Sprintf(`(() => { const a = [...document.querySelectorAll(%s)].find(a => a.textContent === %s); if (a) a.click(); return !!a })()`,
		strconv.Quote(selector), strconv.Quote(text)))
}

// screenshot saves the page to $PWSYNC_SCREENSHOTS_DIR (docs/ when
// refreshing them) or a temp dir, scrolled to the top with nothing focused:
// the laptop-sized viewport or, with full, the whole page.
func screenshot(t *testing.T, ctx context.Context, name string, full bool) {
	t.Helper()
	dir := os.Getenv("PWSYNC_SCREENSHOTS_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); return true })()`)); err != nil {
		t.Fatal(err)
	}
	if full {
		// A viewport as tall as the page, so that fixed elements (the status
		// line) sit at its bottom, not in the middle of the picture.
		height, err := chromedp.Run(ctx, chromedp.Evaluate[int64](`document.documentElement.scrollHeight`))
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1366, height)); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := chromedp.Do(ctx, laptop()); err != nil {
				t.Fatal(err)
			}
		}()
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
	liveRows := `[...document.querySelectorAll('#live-table tbody tr:not(.placeholder)')]`
	t.Run("helpdesk reset appears in the live view", func(t *testing.T) {
		// The DC is shared by concurrent tests: their users' events fill the
		// feed. The filter (server-side) keeps alice's story on screen.
		if err := do(ctx, chromedp.WaitVisible(chromedp.ID("live-user")), chromedp.SendKeys(chromedp.ID("live-user"), alice.UPN),
			chromedp.Click(chromedp.CSS(`#live-filter button[type=submit]`))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the filter applied", fmt.Sprintf(`document.getElementById('live-filter-state').textContent.includes(%s) && decodeURIComponent(location.hash) === %s`,
			js(alice.UPN), js("#live/"+alice.UPN)))
		s.dc.ForceChange(t, alice.DN)
		s.waitWrites(t, aliceID, cloudResetWrites, 0)
		waitJS(t, ctx, "the AD event", fmt.Sprintf(liveRows+`.some(r => r.textContent.includes(%s) && r.textContent.includes('AD user changed: must change at next logon'))`, js(alice.UPN)))
		waitJS(t, ctx, "the action outcome", fmt.Sprintf(liveRows+`.some(r => r.textContent.includes(%s) && r.textContent.includes('require_password_change') && r.textContent.includes('ok'))`, js(alice.UPN)))
		waitJS(t, ctx, "the latency point", `/^[1-9]\d* Graph writes?;/.test(document.getElementById('latency-summary').textContent)`)
		// Only alice's rows: bob's and carol's creation (and other tests'
		// users) are filtered out.
		waitJS(t, ctx, "only alice's rows", fmt.Sprintf(liveRows+`.every(r => r.querySelector('a') && r.querySelector('a').textContent === %s)`, js(alice.UPN)))
		screenshot(t, ctx, "console-live.png", false)
	})
	t.Run("user timeline", func(t *testing.T) {
		clickJS(t, ctx, "alice's link in the live view", "#live-table a", alice.UPN)
		waitJS(t, ctx, "the timeline", `!!document.getElementById('timeline') && document.getElementById('timeline').textContent.includes('require_password_change')`)
		waitJS(t, ctx, "the joined cloud account", fmt.Sprintf(`document.getElementById('user-detail').textContent.includes(%s)`, js(aliceID)))
		// event -> rule -> action -> Graph answer reads in one row each.
		waitJS(t, ctx, "the event column", `[...document.querySelectorAll('#timeline tbody tr')].some(r => r.cells[1].textContent.startsWith('AD change, USN ') && r.cells[3].textContent.includes('forced-change'))`)
		// Pending in words, not an action ID.
		waitJS(t, ctx, "the pending change in words", fmt.Sprintf(`(t => t.includes('forced-change rule') && !t.includes(%s))(document.getElementById('user-pending').textContent)`, js(alice.GUID)))
		screenshot(t, ctx, "console-user.png", true)

		search := func(q string) {
			t.Helper()
			// From #user to #user is no navigation: the field keeps its text.
			if err := do(ctx, chromedp.Navigate(a.URL()+"/#user"), chromedp.WaitVisible(chromedp.ID("user-q"))); err != nil {
				t.Fatal(err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { document.getElementById('user-q').value = ''; document.getElementById('user-results').replaceChildren(); return true })()`)); err != nil {
				t.Fatal(err)
			}
			if err := do(ctx, chromedp.SendKeys(chromedp.ID("user-q"), q), chromedp.Click(chromedp.CSS(`form[role=search] button`))); err != nil {
				t.Fatal(err)
			}
		}
		// By name.
		search("con-bob")
		waitJS(t, ctx, "the search result", fmt.Sprintf(`document.getElementById('user-results').textContent.includes(%s)`, js(bob.UPN)))
		// A part of a UPN with "@" is a search too, not a user page that 404s.
		search(strings.TrimSuffix(bob.UPN, ".test"))
		waitJS(t, ctx, "the partial UPN's result", fmt.Sprintf(`location.hash === '#user' && document.getElementById('user-results').textContent.includes(%s)`, js(bob.UPN)))
		// The whole UPN (in any case) opens the user.
		search(strings.ToUpper(bob.UPN))
		waitJS(t, ctx, "bob's page", fmt.Sprintf(`decodeURIComponent(location.hash) === %s && (document.getElementById('user-name')||{textContent: ''}).textContent.includes(%s)`, js("#user/"+bob.UPN), js(bob.UPN)))
	})
	t.Run("policy and explain", func(t *testing.T) {
		if err := do(ctx, chromedp.Navigate(a.URL()+"/#policy"), chromedp.WaitVisible(chromedp.ID("explain-upn")),
			chromedp.SendKeys(chromedp.ID("explain-upn"), alice.UPN), chromedp.Click(chromedp.CSS(`#view form button`))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the rules", `!document.getElementById('policy-text').textContent.includes('Loading')`)
		waitJS(t, ctx, "the explanation", `document.getElementById('explain-text').textContent.includes('Scope:')`)
		// A usable input; long explanation lines wrap instead of running off.
		waitJS(t, ctx, "a wide input", `document.getElementById('explain-upn').offsetWidth >= 320`)
		waitJS(t, ctx, "wrapped text", `(p => p.scrollWidth <= p.clientWidth)(document.getElementById('explain-text'))`)
		screenshot(t, ctx, "console-policy.png", false)
	})
	t.Run("campaign from preview through a second person's approval to report", func(t *testing.T) {
		// Campaigns are on by default: the API must be there.
		if err := a.client(t, a.Viewer).Do(context.Background(), "GET", "/api/v1/campaigns", nil, nil); err != nil {
			t.Fatalf("the campaign API: %v", err)
		}
		downloads := t.TempDir()
		if _, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
			Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads}); err != nil {
			t.Fatal(err)
		}
		// The OU's DN holds commas: one line is one DN. Alice is in the OU
		// and excluded by UPN.
		if err := do(ctx, chromedp.Navigate(a.URL()+"/#campaigns"), chromedp.WaitVisible(chromedp.ID("c-name")),
			chromedp.SendKeys(chromedp.ID("c-name"), "browser test"), chromedp.SendKeys(chromedp.ID("c-reason"), "INC-1"),
			chromedp.SendKeys(chromedp.ID("c-ous"), s.ou), chromedp.SendKeys(chromedp.ID("c-upns"), "nobody@example.test"),
			chromedp.SendKeys(chromedp.ID("c-x_upns"), alice.UPN), chromedp.Click(chromedp.ID("c-create"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the preview", `(document.getElementById('c-state')||{}).textContent === 'previewed' && (document.getElementById('c-unmatched')||{textContent: ''}).textContent.includes('nobody@example.test')`)
		// Plural-aware sentences, no dangling separators.
		const wantPreview = "2 users selected: AD write for 2 users. Steps: AD must-change (pwdLastSet=0) for 2 users. 1 left out: 1 excluded by the campaign's exclude selector. 1 UPN matched nobody."
		waitJS(t, ctx, "the preview counts", fmt.Sprintf(`document.getElementById('c-preview-counts').textContent === %s`, js(wantPreview)))
		waitJS(t, ctx, "alice excluded", fmt.Sprintf(`document.getElementById('c-excluded').textContent.includes(%s)`, js(alice.UPN)))
		// Above the threshold: the creator (who holds the approver role too)
		// sees a disabled Approve and no Start; the server refuses as well.
		waitJS(t, ctx, "the creator's approve refused", `document.getElementById('c-approve').disabled && !document.getElementById('c-start') && document.getElementById('c-approve-why').textContent.includes('another person')`)
		screenshot(t, ctx, "console-campaign-preview.png", true)
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
		// Polls rebuild nothing while the state holds: the same node stays,
		// so keyboard focus on it survives them.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { window.__start = document.getElementById('c-start'); window.__start.focus(); return true })()`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3500 * time.Millisecond) // more than one poll (3 s before the start)
		waitJS(t, ctx, "focus kept across polls", `document.activeElement === window.__start && document.getElementById('c-start') === window.__start`)
		if err := do(ctx, chromedp.Click(chromedp.ID("c-start"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the campaign to finish", `(document.getElementById('c-state')||{}).textContent === 'done'`)
		waitJS(t, ctx, "two users done", `document.getElementById('c-counts').textContent === '2 done, 0 failed, 0 remaining of 2. 0 Graph writes, 2 LDAP writes.'`)
		if err := do(ctx, chromedp.Click(chromedp.ID("c-report-csv"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the report download", `document.getElementById('status').textContent.includes('.csv')`)
		screenshot(t, ctx, "console-campaign.png", true)

		// The file the browser saved: one done AD must-change row for bob
		// and one for carol, none for alice.
		file := filepath.Join(downloads, "campaign-"+id+".csv")
		var data []byte
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if data, err = os.ReadFile(file); err == nil && len(data) > 0 {
				break
			}
			if time.Now().After(deadline) {
				ents, _ := os.ReadDir(downloads)
				t.Fatalf("no %s downloaded (dir: %v): %v", file, ents, err)
			}
		}
		rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
		if err != nil || len(rows) < 1 {
			t.Fatalf("report CSV: %v\n%s", err, data)
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		got := map[string]string{}
		for _, r := range rows[1:] {
			got[r[col["upn"]]] += fmt.Sprintf("%s %s %s;", r[col["step"]], r[col["status"]], r[col["outcome"]])
		}
		want := map[string]string{bob.UPN: "ad_must_change done done;", carol.UPN: "ad_must_change done done;"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("report rows by UPN: %v, want %v\n%s", got, want, data)
		}
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
