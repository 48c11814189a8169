package campaign

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/lease"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
)

// Limits are the approval rules.
type Limits struct {
	// ApprovalThreshold: above this many users a second person (approver
	// role, not the creator) must approve; 0 = always.
	ApprovalThreshold int
	// HardCap: larger campaigns are refused outright.
	HardCap int
}

// Preview is the summary shown before anything is written.
type Preview struct {
	At    time.Time `json:"at"`
	By    string    `json:"by"`
	Total int       `json:"total"`
	// ByWrite counts users by what the campaign writes for them.
	ByWrite map[Write]int `json:"by_write"`
	// ByKind is ByWrite under the ledger's kind names (synced: an AD
	// write, whatever the cloud account is); kept for API clients and
	// previews stored before by_write.
	//
	// Deprecated: use ByWrite.
	ByKind    map[Kind]int   `json:"by_kind"`
	ByStep    map[Step]int   `json:"by_step"`
	Sample    []Target       `json:"sample"`
	Excluded  map[string]int `json:"excluded"` // count by reason
	Unmatched int            `json:"unmatched"`
	// NeedsApproval: Total is above the approval threshold.
	NeedsApproval     bool `json:"needs_approval"`
	ApprovalThreshold int  `json:"approval_threshold"`
	HardCap           int  `json:"hard_cap"`
}

// Writes is ByWrite, derived from ByKind for a preview stored before it.
func (p Preview) Writes() map[Write]int {
	if p.ByWrite != nil {
		return p.ByWrite
	}
	out := map[Write]int{}
	for k, n := range p.ByKind {
		out[k.Write()] += n
	}
	return out
}

// Details are the preview's lists, capped.
type Details struct {
	Excluded  []Excluded `json:"excluded"`
	Unmatched []string   `json:"unmatched"`
	Truncated bool       `json:"truncated,omitempty"`
}

// maxDetails bounds the stored lists (one KV value).
const maxDetails = 5000

// sampleSize is how many targets the preview shows.
const sampleSize = 20

// Deps is what campaigns need from the process.
type Deps struct {
	JS jetstream.JetStream
	// Resolver resolves a spec's selectors in its domain (Create, Preview,
	// Start); nil refuses them (a runner alone, in tests).
	Resolver func(domain string) (*Resolver, error)
	Limits   Limits
	// Verify is the must-change read-back and fallback a campaign previewed
	// now will use (mustchange.FromConfig); nil = no read-back.
	Verify *mustchange.Strategy
	// Runner runs the started campaigns; nil: this process runs none (no
	// actuator here) and Run returns at once.
	Runner *RunnerDeps
	Holder string // this replica in the runner's lease; default hostname-pid
	Log    zerolog.Logger
	Now    func() time.Time // nil = time.Now
}

// RunnerDeps is what the runner needs beyond Deps.
type RunnerDeps struct {
	Batch graph.Batcher
	// Pacer is the campaign's lane of the process's write budget (the
	// actuator's scheduler: live resets go first).
	Pacer *Pacer
	AD    func(domain string) (ADWriter, error) // nil: no AD
	// Risk marks the targets of confirm_compromised campaigns compromised
	// in Entra ID Protection (*msgraph.Client); nil: such campaigns fail.
	Risk RiskMarker
	// BreakGlass reads the domain's break-glass accounts (Resolver.BreakGlass)
	// when a run starts and every Cfg.BreakGlassEvery: an account that
	// became break-glass after the preview is not written. A run does not
	// start while it fails. nil: no check beyond the preview's (tests).
	BreakGlass func(ctx context.Context, domain string) (*BreakGlass, error)
	Cfg        RunConfig
}

// Service is what the admin API and the CLI do to campaigns, and, where
// the process runs them, their runner.
type Service struct {
	store    *Store
	resolver func(domain string) (*Resolver, error)
	limits   Limits
	verify   *mustchange.Strategy
	clock    func() time.Time
	runner   *runner // nil: campaigns run elsewhere
	leases   jetstream.KeyValue
	holder   string
	log      zerolog.Logger
}

// New opens the campaigns bucket and, for a runner, the leases bucket.
func New(ctx context.Context, d Deps) (*Service, error) {
	store, err := OpenStore(ctx, d.JS)
	if err != nil {
		return nil, err
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	s := &Service{store: store, resolver: d.Resolver, limits: d.Limits, verify: d.Verify, clock: now, holder: d.Holder, log: d.Log}
	if d.Runner == nil {
		return s, nil
	}
	rd := d.Runner
	cfg := rd.Cfg.withDefaults()
	if u, err := url.Parse(cfg.GraphBaseURL); err != nil || !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("campaign runner: Graph base URL %q: want the absolute URL of graph.base_url", cfg.GraphBaseURL)
	}
	if rd.Batch == nil || rd.Pacer == nil {
		return nil, errors.New("campaign runner: a Graph batcher and a pacer are required")
	}
	if s.leases, err = natsx.Bucket(ctx, d.JS, natsx.BucketLeases); err != nil {
		return nil, err
	}
	if s.holder == "" {
		s.holder = lease.DefaultHolder()
	}
	s.runner = &runner{store: store, batch: rd.Batch, ad: rd.AD, risk: rd.Risk, pub: natsx.NewPublisher(d.JS), pacer: rd.Pacer,
		breakGlass: rd.BreakGlass, cfg: cfg, log: d.Log, now: now}
	return s, nil
}

// Run executes the running campaigns, one at a time (they share the write
// budget), on the one replica holding the runner's lease, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if s.runner == nil {
		return nil
	}
	return lease.New(s.leases, LeaseKey, s.holder, natsx.LeaseRenew, s.log).Run(ctx, s.runner.run)
}

func (s *Service) now() time.Time {
	return s.clock().UTC()
}

// resolve is the domain's Resolver.
func (s *Service) resolve(domain string) (*Resolver, error) {
	if s.resolver == nil {
		return nil, errors.New("campaigns: no resolver configured")
	}
	return s.resolver(domain)
}

// Create validates the spec and stores a draft.
func (s *Service) Create(ctx context.Context, spec Spec, by string) (Campaign, error) {
	spec.Name = strings.TrimSpace(spec.Name)
	switch {
	case spec.Name == "":
		return Campaign{}, fmt.Errorf("%w: name is required", ErrInvalid)
	case len(spec.Name) > 200:
		return Campaign{}, fmt.Errorf("%w: name longer than 200 characters", ErrInvalid)
	case spec.Include.Empty():
		return Campaign{}, fmt.Errorf("%w: include selects nobody: give ad_groups, ous, ldap_filter, entra_groups, upns or all_in_scope", ErrInvalid)
	case !spec.Actions.RequireChange && !spec.Actions.RevokeSessions && !spec.Actions.Notify:
		if spec.Actions.ConfirmCompromised {
			return Campaign{}, fmt.Errorf("%w: confirm_compromised goes with a reset: set require_change, revoke_sessions and/or notify too", ErrInvalid)
		}
		return Campaign{}, fmt.Errorf("%w: no action: set require_change, revoke_sessions and/or notify", ErrInvalid)
	}
	r, err := s.resolve(spec.Domain)
	if err != nil {
		return Campaign{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	spec.Domain = r.Scope.Domain
	if err := spec.Include.normalize("include", r.Scope.BaseDN); err != nil {
		return Campaign{}, err
	}
	if err := spec.Exclude.normalize("exclude", r.Scope.BaseDN); err != nil {
		return Campaign{}, err
	}
	now := s.now()
	c := Campaign{ID: newID(now), Spec: spec, State: StateDraft, CreatedBy: by, CreatedAt: now, UpdatedAt: now,
		Log: []Change{{At: now, By: by, To: StateDraft}}}
	if err := s.store.Create(ctx, c); err != nil {
		return Campaign{}, err
	}
	return c, nil
}

// newID is sortable by time and unique: a KV key token.
func newID(now time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return now.Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// Preview resolves the selectors, stores the target set and returns the
// summary. Nothing is written to AD or Graph. A campaign above the hard cap
// is refused (it stays a draft).
func (s *Service) Preview(ctx context.Context, id, by string) (Campaign, error) {
	c, _, err := s.store.Get(ctx, id)
	if err != nil {
		return c, err
	}
	if !CanMove(c.State, StatePreviewed) {
		return c, fmt.Errorf("%w: campaign %s is %s: preview only before it runs", ErrConflict, id, c.State)
	}
	r, err := s.resolve(c.Spec.Domain)
	if err != nil {
		return c, err
	}
	res, err := r.Resolve(ctx, c.Spec)
	if err != nil {
		return c, err
	}
	if s.limits.HardCap > 0 && len(res.Targets) > s.limits.HardCap {
		return c, fmt.Errorf("%w: %d users selected, above the hard cap of %d (campaigns.hard_cap): narrow the selection or split it",
			ErrTooLarge, len(res.Targets), s.limits.HardCap)
	}
	if c.Spec.Actions.ConfirmCompromised {
		if err := r.fillCloudIDs(ctx, res.Targets); err != nil {
			return c, err
		}
	}
	var verify *mustchange.Strategy
	if s.verify != nil && c.Spec.Actions.RequireChange {
		v := *s.verify
		verify = &v
	}
	p := summarize(res, Campaign{Spec: c.Spec, Verify: verify}, s.now(), by)
	p.ApprovalThreshold, p.HardCap = s.limits.ApprovalThreshold, s.limits.HardCap
	p.NeedsApproval = len(res.Targets) > s.limits.ApprovalThreshold
	d := Details{Excluded: res.Excluded, Unmatched: res.Unmatched}
	if len(d.Excluded) > maxDetails {
		d.Excluded, d.Truncated = d.Excluded[:maxDetails], true
	}
	if len(d.Unmatched) > maxDetails {
		d.Unmatched, d.Truncated = d.Unmatched[:maxDetails], true
	}
	if err := s.store.SaveTargets(ctx, id, res.Targets, d); err != nil {
		return c, err
	}
	return s.store.Update(ctx, id, func(c *Campaign) error {
		if err := c.move(StatePreviewed, by, p.At, fmt.Sprintf("%d users", p.Total)); err != nil {
			return err
		}
		c.Targets, c.NeedsApproval, c.Preview, c.Verify = p.Total, p.NeedsApproval, &p, verify
		c.ApprovedBy, c.ApprovedAt = "", time.Time{} // approval was for the previous preview
		return nil
	})
}

// ErrTooLarge: above the hard cap.
var ErrTooLarge = fmt.Errorf("%w: campaign too large", ErrInvalid)

func summarize(res Resolution, c Campaign, at time.Time, by string) Preview {
	p := Preview{At: at, By: by, Total: len(res.Targets), ByWrite: map[Write]int{}, ByKind: map[Kind]int{}, ByStep: map[Step]int{},
		Excluded: map[string]int{}, Unmatched: len(res.Unmatched)}
	for _, t := range res.Targets {
		p.ByWrite[t.Kind.Write()]++
		p.ByKind[t.Kind]++
		for _, st := range c.StepsFor(t) {
			p.ByStep[st]++
		}
	}
	for _, e := range res.Excluded {
		p.Excluded[e.Reason]++
	}
	// The sample spreads over the set, so both kinds show.
	if n := len(res.Targets); n <= sampleSize {
		p.Sample = res.Targets
	} else {
		for i := range sampleSize {
			p.Sample = append(p.Sample, res.Targets[i*n/sampleSize])
		}
	}
	return p
}

// Approve records a second person's approval. The approver must hold the
// approver role (checked by the API) and must not be the creator.
func (s *Service) Approve(ctx context.Context, id, by string) (Campaign, error) {
	return s.store.Update(ctx, id, func(c *Campaign) error {
		if strings.EqualFold(by, c.CreatedBy) {
			return fmt.Errorf("%w: the creator of a campaign cannot approve it", ErrForbidden)
		}
		if err := c.move(StateApproved, by, s.now(), ""); err != nil {
			return err
		}
		c.ApprovedBy, c.ApprovedAt = by, c.UpdatedAt
		return nil
	})
}

// Start moves a previewed (and, when needed, approved) campaign to running;
// the runner picks it up. The break-glass accounts are read again first: a
// start is refused when that fails, and the users who became break-glass
// since the preview are counted in the change log (the runner records them
// as excluded and writes nothing for them).
func (s *Service) Start(ctx context.Context, id, by string) (Campaign, error) {
	note, err := s.breakGlassNote(ctx, id)
	if err != nil {
		return Campaign{}, err
	}
	return s.store.Update(ctx, id, func(c *Campaign) error {
		if c.State == StatePreviewed && c.NeedsApproval {
			return fmt.Errorf("%w: %d users is above the approval threshold: a second person with the approver role must approve first",
				ErrConflict, c.Targets)
		}
		if c.State == StateApproved && strings.EqualFold(c.ApprovedBy, c.CreatedBy) {
			return fmt.Errorf("%w: approved by its creator", ErrForbidden) // cannot happen through Approve; belt and braces
		}
		if err := c.move(StateRunning, by, s.now(), note); err != nil {
			return err
		}
		c.StartedBy, c.StartedAt = by, c.UpdatedAt
		return nil
	})
}

// breakGlassNote reads the break-glass accounts and says how many of a
// campaign's targets are among them now ("" when none, or when the campaign
// is not about to start).
func (s *Service) breakGlassNote(ctx context.Context, id string) (string, error) {
	c, _, err := s.store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if c.State != StatePreviewed && c.State != StateApproved {
		return "", nil // the move below refuses it
	}
	r, err := s.resolve(c.Spec.Domain)
	if err != nil {
		return "", err
	}
	bg, err := r.BreakGlass(ctx)
	if err != nil {
		return "", fmt.Errorf("start refused: %w", err)
	}
	targets, err := s.store.Targets(ctx, id, c.Targets)
	if err != nil {
		return "", err
	}
	n := 0
	for _, t := range targets {
		if bg.Reason(t) != "" {
			n++
		}
	}
	if n == 0 {
		return "", nil
	}
	return fmt.Sprintf("%d users became break-glass since the preview: not written (excluded in the report)", n), nil
}

// Pause stops dispatching new writes; in-flight ones finish and are recorded.
func (s *Service) Pause(ctx context.Context, id, by string) (Campaign, error) {
	return s.store.Update(ctx, id, func(c *Campaign) error { return c.move(StatePaused, by, s.now(), "") })
}

// Resume continues a paused campaign.
func (s *Service) Resume(ctx context.Context, id, by string) (Campaign, error) {
	return s.store.Update(ctx, id, func(c *Campaign) error {
		if c.State != StatePaused {
			return fmt.Errorf("%w: campaign %s is %s, not paused", ErrConflict, id, c.State)
		}
		return c.move(StateRunning, by, s.now(), "resumed")
	})
}

// Cancel ends a campaign; users not yet written are left alone.
func (s *Service) Cancel(ctx context.Context, id, by string) (Campaign, error) {
	return s.store.Update(ctx, id, func(c *Campaign) error {
		if err := c.move(StateCancelled, by, s.now(), ""); err != nil {
			return err
		}
		c.FinishedAt = c.UpdatedAt
		return nil
	})
}

// Status is a campaign with its counters.
type Status struct {
	Campaign Campaign `json:"campaign"`
	Stats    Stats    `json:"stats"`
}

// Status returns the campaign and its run counters.
func (s *Service) Status(ctx context.Context, id string) (Status, error) {
	c, _, err := s.store.Get(ctx, id)
	if err != nil {
		return Status{}, err
	}
	st, err := s.store.GetStats(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if st.Total == 0 {
		st.Total, st.Remaining = c.Targets, c.Targets
	}
	return Status{Campaign: c, Stats: st}, nil
}
