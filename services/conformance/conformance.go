// Package conformance holds the contract checks `pwsync conformance` runs
// against the real services (a tenant's Microsoft Graph, a domain's DCs)
// and `make test` runs against the simulator and Samba: each check calls
// Graph or LDAP through pwsync's own code paths (graph.Client, graph.Tracker,
// adwatch's dial and requests, campaign's LDAP writer) and judges the
// answer against what the real service documents, so both worlds are judged
// by one suite. Doctor checks connectivity; these check shapes and
// semantics.
//
// Read-only unless Options.Write: then only the named test users (and the
// named test group) are written, and every write is undone.
package conformance

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/shared/graph"
)

// Status is a check's verdict.
type Status string

// Verdicts.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is one contract and what was seen.
type Result struct {
	Status Status
	Name   string // e.g. "graph user by upn", "ad example.test dirsync"
	// Seen is the answer: status and the relevant part of the body. Never
	// a secret, token or clientState.
	Seen string
	// Want is the contract, printed when the check does not pass.
	Want string
}

func (r Result) String() string {
	s := fmt.Sprintf("%s  %-40s %s", r.Status, r.Name, strings.ReplaceAll(r.Seen, "\n", "\n      "))
	if r.Status != Pass && r.Want != "" {
		s += "\n      want: " + r.Want
	}
	return s
}

// Graph is how the checks reach Graph: pwsync's own client.
type Graph struct {
	Client    graph.Client
	Tracker   graph.Tracker
	Batcher   graph.Batcher
	Directory graph.Directory
	// Token acquires a token as every call does and returns its roles.
	Token    func(ctx context.Context) (roles []string, expires time.Time, err error)
	BaseURL  string // graph.base_url, e.g. https://graph.microsoft.com/v1.0
	ClientID string
}

// Domain is one AD domain as the watcher is configured for it.
type Domain struct {
	Config adwatch.Config
}

// Options say what may be written and what the deployment uses.
type Options struct {
	// Write allows writes on the test users and the test group; each is undone.
	Write bool
	// TestUser is the UPN of a cloud-only Entra test user.
	TestUser string
	// TestADUser is the sAMAccountName or UPN of an AD test user (synced
	// to Entra, for the identity join check).
	TestADUser string
	// TestGroup is the Entra group the member checks add the test user to
	// and remove it from (actuator.synced.pending_group_id by default).
	TestGroup string
	// NotificationURL answers Graph's validation handshake (pwsync's
	// webhook receiver): the subscription lifecycle check needs it.
	NotificationURL string
	// LifecycleURL is the subscription's lifecycleNotificationUrl
	// (default NotificationURL).
	LifecycleURL string
	// Wait bounds how long a write may take to show (delta, sessions,
	// group members, DirSync, change notification). Default 60 s.
	Wait time.Duration
	// What the configuration turns on: checks of unused features SKIP.
	NeverExpires bool   // evaluator.never_expires: pwsync writes passwordPolicies
	MailSenders  bool   // notify: sendMail from notify.senders
	Teams        bool   // notify.teams
	Fallback     string // actuator.cloud_managed.fallback, quoted in the passwordProfile check
	PendingGroup string // actuator.synced.pending_group_id
}

// Run runs every check and returns the results in order: AD first (the AD
// test user's anchor feeds the Graph identity join), then Graph. A nil
// Graph or no domains leaves those checks out.
func Run(ctx context.Context, g *Graph, domains []Domain, opts Options) []Result {
	if opts.Wait <= 0 {
		opts.Wait = 60 * time.Second
	}
	if opts.LifecycleURL == "" {
		opts.LifecycleURL = opts.NotificationURL
	}
	if opts.TestGroup == "" {
		opts.TestGroup = opts.PendingGroup
	}
	r := &runner{opts: opts}
	for _, d := range domains {
		r.domain(ctx, d)
	}
	if g != nil {
		r.graph(ctx, g)
	}
	return r.results
}

// Report writes the results and returns the number of failures.
func Report(w io.Writer, results []Result) int {
	failed, skipped := 0, 0
	for _, res := range results {
		fmt.Fprintln(w, res)
		switch res.Status {
		case Fail:
			failed++
		case Skip:
			skipped++
		}
	}
	fmt.Fprintf(w, "%d checks: %d passed, %d failed, %d skipped\n", len(results), len(results)-failed-skipped, failed, skipped)
	return failed
}

// runner carries what one check learns for the next ones.
type runner struct {
	opts    Options
	results []Result
	// adImmutableID is the AD test user's anchor (base64), for the join check.
	adImmutableID string
	adTestUser    string // its DN, named in results
}

func (r *runner) add(res Result) { r.results = append(r.results, res) }

func (r *runner) pass(name, seen string) { r.add(Result{Status: Pass, Name: name, Seen: seen}) }

func (r *runner) fail(name, seen, want string) {
	r.add(Result{Status: Fail, Name: name, Seen: seen, Want: want})
}

func (r *runner) skip(name, why string) { r.add(Result{Status: Skip, Name: name, Seen: why}) }

// poll calls fn until it reports done, fails, or wait passes.
func poll(ctx context.Context, wait time.Duration, fn func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(wait)
	delay := 200 * time.Millisecond
	for {
		done, err := fn()
		if done || err != nil {
			return done, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// errText is an error for Seen: Graph's status, code and message, or the
// transport error. *graph.Error never carries a token.
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
