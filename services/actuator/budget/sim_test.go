package budget

import (
	"slices"
	"testing"
	"time"
)

// The write path under a saturating campaign, in virtual time: the
// campaign's $batch lane (as services/campaign's Graph lane: acquire up to
// a batch, then one of a few requests in flight, slots back at the answer)
// and live resets (a chain of single writes each, one reset a period), on
// the scheduler's own take/Done.

type simConfig struct {
	cfg       Config
	run       time.Duration
	resetEach time.Duration // a live reset starts every resetEach
	liveFrom  time.Duration // resets from then (0: from resetEach) ...
	liveTo    time.Duration // ... until then (0: the end)
	perReset  int           // its writes, one after the other
	liveRTT   time.Duration // one live write's answer time
	batchRTT  time.Duration // one $batch's answer time
	batches   int           // $batch requests in flight at most
}

type simResult struct {
	first    []time.Duration // each reset's wait for its first slot
	worst    time.Duration   // the longest wait of any live write
	campaign int             // campaign writes answered in the steady state
	live     int             // live writes answered in the steady state
	steady   time.Duration
}

type simEvent struct {
	at time.Time
	fn func()
}

func simulate(sc simConfig) simResult {
	s, clk := newTest(sc.cfg)
	start := clk.t
	var res simResult
	var events []simEvent
	after := func(d time.Duration, fn func()) { // events stay in time order
		e := simEvent{clk.t.Add(d), fn}
		i, _ := slices.BinarySearchFunc(events, e, func(a, b simEvent) int { return cmpTime(a.at, b.at) })
		events = slices.Insert(events, i, e)
	}
	steadyFrom := start.Add(sc.cfg.Window) // the first window's burst is not the steady state

	// live chains: writes left, waiting since, registered as waiting
	type chain struct {
		left       int
		since      time.Time
		first      bool
		registered bool
		sent       bool // a write in flight
	}
	var chains []*chain
	var lastReset time.Time

	// the campaign's dispatcher: slots held, waiting for a request slot
	var held, inFlight int
	campRegistered := false
	var campNext time.Time // the next try: the wait take asked for, or the next Done
	done := func(taken, counted int) {
		s.Done(taken, counted)
		campNext = clk.t
	}

	tick := time.Millisecond
	for clk.t.Before(start.Add(sc.run)) {
		now := clk.t
		for len(events) > 0 && !events[0].at.After(now) {
			e := events[0]
			events = events[1:]
			e.fn()
		}
		at := now.Sub(start)
		if at >= max(sc.liveFrom, sc.resetEach) && (sc.liveTo == 0 || at < sc.liveTo) && (lastReset.IsZero() || now.Sub(lastReset) >= sc.resetEach) {
			lastReset = now
			chains = append(chains, &chain{left: sc.perReset, since: now, first: true})
		}
		s.mu.Lock()
		for _, c := range chains {
			if c.left == 0 || c.sent {
				continue
			}
			got, _ := s.take(now, Live, 1)
			if got == 0 {
				if !c.registered {
					c.registered = true
					s.waiting[Live]++
				}
				continue
			}
			if c.registered {
				c.registered = false
				s.waiting[Live]--
			}
			w := now.Sub(c.since)
			if c.first {
				res.first = append(res.first, w)
				c.first = false
			}
			res.worst = max(res.worst, w)
			c.sent = true
			after(sc.liveRTT, func() {
				done(1, 1)
				if !clk.t.Before(steadyFrom) {
					res.live++
				}
				c.left--
				c.sent = false
				c.since = clk.t
			})
		}
		if held == 0 && !now.Before(campNext) {
			got, wait := s.take(now, Campaign, 20)
			campNext = now.Add(wait)
			switch {
			case got == 0 && !campRegistered:
				campRegistered = true
				s.waiting[Campaign]++
			case got > 0:
				if campRegistered {
					campRegistered = false
					s.waiting[Campaign]--
				}
				held = got
			}
		}
		s.mu.Unlock()
		if held > 0 && inFlight < sc.batches {
			n := held
			held, inFlight = 0, inFlight+1
			after(sc.batchRTT, func() {
				done(n, n)
				inFlight--
				if !clk.t.Before(steadyFrom) {
					res.campaign += n
				}
			})
		}
		clk.t = clk.t.Add(tick)
	}
	res.steady = start.Add(sc.run).Sub(steadyFrom)
	return res
}

func pct(d []time.Duration, q float64) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

// A live reset during a saturating campaign gets its slot at once, in the
// benchmark's shape (cmd/pwsync BenchmarkLiveResetsDuringCampaign: 150
// writes per 15 s, a reset a second of 3 writes, $batches of up to 15) and
// at Graph's scale, while the campaign keeps >= 95% of what live leaves it.
// Before leaveLive, the first write of a reset waited up to 2.3 s here
// (2.5 s at Graph's scale): once a window, where the window before had no
// slot expiring.
func TestLiveDuringSaturatingCampaign(t *testing.T) {
	bench := func(sc simConfig) simConfig {
		sc.cfg = Config{Limit: 150, Window: 15 * time.Second, Reserve: DefaultReserve(150)}
		sc.run, sc.batches = 90*time.Second, 4
		return sc
	}
	tests := []struct {
		name      string
		sc        simConfig
		minShare  float64       // of what the budget left the campaign
		worstWait time.Duration // of any live write; -1: not checked
	}{
		{"bench", bench(simConfig{resetEach: time.Second, perReset: 3, liveRTT: 20 * time.Millisecond, batchRTT: 300 * time.Millisecond}), 0.95, 0},
		// live begins during saturation: the reserve alone covers the first
		// resets (a later write of the second may wait for the next slot)
		{"resets_start_late", bench(simConfig{resetEach: time.Second, liveFrom: 20 * time.Second, liveTo: 60 * time.Second, perReset: 3,
			liveRTT: 20 * time.Millisecond, batchRTT: 300 * time.Millisecond}), 0.95, -1},
		{"bursty_resets", bench(simConfig{resetEach: 3 * time.Second, liveFrom: 20 * time.Second, perReset: 4, liveRTT: 5 * time.Millisecond,
			batchRTT: 300 * time.Millisecond}), 0.95, 0},
		{"graph_scale", simConfig{cfg: Config{Limit: 3000, Window: 150 * time.Second, Reserve: DefaultReserve(3000)}, run: 450 * time.Second,
			resetEach: time.Second, perReset: 3, liveRTT: 50 * time.Millisecond, batchRTT: 500 * time.Millisecond, batches: 4}, 0.95, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := simulate(tt.sc)
			left := float64(tt.sc.cfg.Limit)/tt.sc.cfg.Window.Seconds()*r.steady.Seconds() - float64(r.live)
			share := float64(r.campaign) / left
			t.Logf("first-write wait p50 %v max %v, any live write's %v; campaign %d of the %.0f left (%.1f%%)",
				pct(r.first, 0.5), pct(r.first, 1), r.worst, r.campaign, left, 100*share)
			if w := pct(r.first, 1); w > 0 {
				t.Errorf("a live reset's first write waited %v, want none", w)
			}
			if tt.worstWait >= 0 && r.worst > tt.worstWait {
				t.Errorf("a live write waited %v, want at most %v", r.worst, tt.worstWait)
			}
			if share < tt.minShare {
				t.Errorf("campaign wrote %.1f%% of what the budget left it, want >= %.0f%%", 100*share, 100*tt.minShare)
			}
		})
	}
}

// cmpTime orders events at the same instant first come, first served.
func cmpTime(a, b time.Time) int {
	if a.After(b) {
		return 1
	}
	return -1
}
