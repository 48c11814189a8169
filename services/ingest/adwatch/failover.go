package adwatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/shared/metrics"
)

// errEarlierBack ends a session on a fallback DC: an earlier (preferred)
// one answers again.
var errEarlierBack = errors.New("an earlier DC answers again")

// errDCHung ends a session whose DC stopped answering mid-request.
var errDCHung = errors.New("the DC stopped answering")

// watchRequest guards the requests the session makes next on its
// connection, until done is called: if they run longer than HungAfter, the
// DC is pinged on a new connection (ldapconn.Ping, HungAfter at most). A DC
// that does not answer that either is hung (a frozen VM, a stopped
// process: the kernel still acknowledges TCP, so nothing fails before the
// 2-minute request timeout); the session ends with errDCHung, and the
// next DC takes over in seconds, this one tried last until it answers
// again. A DC that answers is slow, not hung, and is waited for.
func (w *Watcher) watchRequest(ctx context.Context, wg *sync.WaitGroup, cancel context.CancelCauseFunc, dc string) (done func()) {
	finished := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(w.cfg.HungAfter)
		defer t.Stop()
		select {
		case <-finished:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tc, err := w.cfg.tlsConfig(dc)
		if err == nil {
			err = ldapconn.Ping(ctx, dc, tc, w.cfg.HungAfter)
		}
		select {
		case <-finished: // answered meanwhile
			return
		default:
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		w.hung.Store(&dc)
		w.log.Warn().Str("dc", dc).Dur("waited", 2*w.cfg.HungAfter).AnErr("ping", err).
			Msg("AD watch: the DC stopped answering; moving to the next")
		cancel(fmt.Errorf("%w: %s: %w", errDCHung, dc, err))
	}()
	return func() { close(finished) }
}

// hungOr is err, or the session's cause when watchRequest ended it (err
// is then only the closed connection).
func hungOr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errDCHung) {
		return cause
	}
	return err
}

// answers records that dc answered: were it the DC found hung, it is no
// longer tried last.
func (w *Watcher) answers(dc string) {
	if hung := w.hung.Load(); hung != nil && *hung == dc {
		w.hung.Store(nil)
	}
}

// order is urls with the DC found hung, if any, moved last.
func (w *Watcher) order(urls []string) []string {
	hung := w.hung.Load()
	if hung == nil || len(urls) < 2 || !slices.Contains(urls, *hung) {
		return urls
	}
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		if u != *hung {
			out = append(out, u)
		}
	}
	return append(out, *hung)
}

// dcID is the invocationId of the DC in use ("" before it is read).
func (w *Watcher) dcID() string {
	if p := w.dcInvocation.Load(); p != nil {
		return *p
	}
	return ""
}

// readDCID reads the invocationId of the DC c is connected to: events
// carry it, so the evaluator compares uSNChanged only within one DC.
func (w *Watcher) readDCID(c *ldap.Conn) error {
	dse, err := readRootDSE(c)
	if err != nil {
		return err
	}
	id, err := readInvocationID(c, dse.DSServiceName)
	if err != nil {
		return err
	}
	w.dcInvocation.Store(&id)
	return nil
}

// DC is the URL of the DC the watcher uses ("" before it first connected).
func (w *Watcher) DC() string {
	if p := w.dc.Load(); p != nil {
		return *p
	}
	return ""
}

// candidates lists the DCs to try, preferred first.
func (w *Watcher) candidates(ctx context.Context) ([]string, error) {
	if w.cfg.Locate == nil {
		return w.cfg.URLs, nil
	}
	urls, err := w.cfg.Locate(ctx)
	if err != nil {
		return nil, fmt.Errorf("locating the DCs of %s: %w", w.cfg.Domain, err)
	}
	for _, u := range urls {
		if err := w.cfg.checkURL(u); err != nil {
			return nil, fmt.Errorf("locating the DCs of %s: %w", w.cfg.Domain, err)
		}
	}
	return urls, nil
}

// pick connects to the first DC that answers, in preference order, and
// makes it the DC in use; earlier are the DCs before it that did not.
//
// Moving between DCs loses and repeats nothing: a DirSync cookie carries
// the domain's up-to-dateness vector and another DC of the domain resumes
// from it (MS-ADTS 3.1.1.3.4.1.3); a uSNChanged watermark is one DC's own
// and is kept per invocationId, so a DC without one starts with a full
// sync (usn.go). Either way a user read again decides nothing new: the
// evaluator compares states (and, across DCs, pwdLastSet's replication
// version), not event IDs.
func (w *Watcher) pick(ctx context.Context) (c *ldap.Conn, dc string, earlier []string, err error) {
	urls, err := w.candidates(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	var errs []error
	for _, u := range w.order(urls) {
		if ctx.Err() != nil {
			return nil, "", nil, ctx.Err()
		}
		c, err := w.dialURL(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		w.answers(u)
		i := slices.Index(urls, u)
		if prev := w.DC(); prev != u {
			ev := w.log.Info()
			if prev != "" {
				ev = w.log.Warn().Str("previous_dc", prev)
			}
			ev.Str("dc", u).Int("preference", i+1).Int("dcs", len(urls)).Errs("skipped", errs).Msg("AD watch: DC in use")
		}
		w.dc.Store(&u)
		metrics.ADDCInUse(w.cfg.Domain, u, urls)
		return c, u, urls[:i], nil
	}
	return nil, "", nil, fmt.Errorf("no DC of %s answers: %w", w.cfg.Domain, errors.Join(errs...))
}

// probeEarlier tries the DCs preferred to the one in use every
// PreferredProbe; the first that connects and binds ends the session
// (cancel), which reconnects to it.
func (w *Watcher) probeEarlier(ctx context.Context, cancel context.CancelCauseFunc, inUse string, earlier []string) {
	t := time.NewTicker(w.cfg.PreferredProbe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, u := range earlier {
			c, err := w.dialURL(u)
			if err != nil {
				continue
			}
			c.Close()
			w.answers(u)
			w.log.Info().Str("dc", u).Str("in_use", inUse).Msg("AD watch: a preferred DC answers again; moving back")
			cancel(errEarlierBack)
			return
		}
	}
}
