package graphsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Change notification delivery. Every change to a user queues an "updated"
// notification (Graph sends "updated" for creation, update and soft
// deletion of users; "deleted" for a permanent deletion) for each matching
// subscription, held back by Options.NotificationDelay (Graph's latency);
// a worker POSTs them, several to one URL batched in one
// changeNotificationCollection as Graph may do, and retries failures with
// exponential backoff for Options.NotificationRetryFor (Graph: 4 hours).

const (
	deliveryTimeout   = 10 * time.Second // Graph waits this long for an answer
	maxPerCollection  = 100
	firstRetryBackoff = 250 * time.Millisecond
	maxRetryBackoff   = time.Second // shorter than Graph's: tests must see a recovered receiver served soon
)

// Delivery is one POST of notifications to an endpoint, for tests.
type Delivery struct {
	Time      time.Time
	URL       string
	Body      []byte // the changeNotificationCollection sent
	Status    int    // 0 when no answer came
	Err       string // transport error, if any
	Attempt   int    // 1 for the first try
	Lifecycle bool
}

type pendingNote struct {
	url       string
	note      map[string]any
	attempt   int
	first     time.Time // first delivery attempt; retries stop retryFor after it
	lifecycle bool
}

type notifier struct {
	client   *http.Client
	delay    time.Duration // Options.NotificationDelay
	retryFor time.Duration // Options.NotificationRetryFor
	wake     chan struct{}

	mu         sync.Mutex
	queue      []pendingNote
	deliveries []Delivery
}

func newNotifier(client *http.Client, delay, retryFor time.Duration) *notifier {
	if client == nil {
		client = &http.Client{Timeout: deliveryTimeout}
	}
	return &notifier{client: client, delay: delay, retryFor: retryFor, wake: make(chan struct{}, 1)}
}

// retryBackoff is the wait before retry number attempt (1 for the first).
func retryBackoff(attempt int) time.Duration {
	if attempt > 8 { // 250 ms << 7 is already above the cap
		return maxRetryBackoff
	}
	return min(firstRetryBackoff<<(attempt-1), maxRetryBackoff)
}

func (n *notifier) push(p pendingNote, after time.Duration) {
	add := func() {
		n.mu.Lock()
		n.queue = append(n.queue, p)
		n.mu.Unlock()
		select {
		case n.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	if after > 0 {
		time.AfterFunc(after, add)
		return
	}
	add()
}

// run delivers until closing is closed.
func (n *notifier) run(closing <-chan struct{}) {
	for {
		select {
		case <-closing:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		n.mu.Unlock()
		for len(batch) > 0 {
			// One POST per URL and kind, in queue order.
			first := batch[0]
			var group, rest []pendingNote
			for _, p := range batch {
				if p.url == first.url && p.lifecycle == first.lifecycle && len(group) < maxPerCollection {
					group = append(group, p)
				} else {
					rest = append(rest, p)
				}
			}
			batch = rest
			n.deliver(closing, group)
		}
	}
}

func (n *notifier) deliver(closing <-chan struct{}, group []pendingNote) {
	notes := make([]map[string]any, len(group))
	for i, p := range group {
		notes[i] = p.note
	}
	body, _ := json.Marshal(map[string]any{"value": notes}) // maps of strings: cannot fail
	ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
	defer cancel()
	go func() {
		select {
		case <-closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	d := Delivery{Time: time.Now(), URL: group[0].url, Body: body, Attempt: group[0].attempt + 1, Lifecycle: group[0].lifecycle}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, group[0].url, bytes.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		var resp *http.Response
		if resp, err = n.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // drain for connection reuse
			resp.Body.Close()
			d.Status = resp.StatusCode
		}
	}
	if err != nil {
		d.Err = err.Error()
	}
	n.mu.Lock()
	n.deliveries = append(n.deliveries, d)
	n.mu.Unlock()
	if d.Status >= 200 && d.Status < 300 {
		return
	}
	for _, p := range group {
		if p.first.IsZero() {
			p.first = d.Time
		}
		p.attempt++
		wait := retryBackoff(p.attempt)
		if time.Since(p.first)+wait <= n.retryFor {
			n.push(p, wait)
		}
	}
}

// Deliveries returns the notification POSTs made so far, oldest first.
func (s *Server) Deliveries() []Delivery {
	s.notifier.mu.Lock()
	defer s.notifier.mu.Unlock()
	return slices.Clone(s.notifier.deliveries)
}

// userChanged queues notifications for a change to a user. It runs with
// the Server lock held (store.onChange).
func (s *Server) userChanged(userID string, kind changeKind) {
	now := time.Now()
	changeType := "updated" // creation, update and soft deletion alike
	if kind == changePurged {
		changeType = "deleted"
	}
	for _, sub := range s.subs {
		if now.After(sub.Expiration) || !sub.matches(userID) || !slices.Contains(sub.changeTypes, changeType) {
			continue
		}
		s.notifier.push(pendingNote{url: sub.NotificationURL, note: map[string]any{
			"subscriptionId":                 sub.ID,
			"subscriptionExpirationDateTime": sub.Expiration.UTC().Format(graphTimeLayout),
			"clientState":                    nullableString(sub.ClientState),
			"changeType":                     changeType,
			"resource":                       "Users/" + userID,
			"tenantId":                       s.opts.TenantID,
			"resourceData": map[string]any{
				"@odata.type":    "#Microsoft.Graph.User",
				"@odata.id":      "Users/" + userID,
				"id":             userID,
				"organizationId": s.opts.TenantID,
			},
		}}, s.notifier.delay)
	}
}

// enqueueLifecycle queues a lifecycle notification; the caller holds the lock.
func (s *Server) enqueueLifecycle(sub *subscription, event string) {
	if sub.LifecycleURL == "" {
		return
	}
	s.notifier.push(pendingNote{url: sub.LifecycleURL, lifecycle: true, note: map[string]any{
		"subscriptionId":                 sub.ID,
		"subscriptionExpirationDateTime": sub.Expiration.UTC().Format(graphTimeLayout),
		"tenantId":                       s.opts.TenantID,
		"clientState":                    nullableString(sub.ClientState),
		"lifecycleEvent":                 event,
	}}, 0)
}

func nullableString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// String helps test failure messages.
func (d Delivery) String() string {
	return fmt.Sprintf("%s %s attempt %d: %d %s %s", d.Time.Format(time.RFC3339Nano), d.URL, d.Attempt, d.Status, d.Err, d.Body)
}
