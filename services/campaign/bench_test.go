package campaign_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/testrig/benchreport"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// TestCampaignThroughputReport: 10,000 cloud users (must-change + revoke:
// 20,000 writes) against the simulator's write budget, time-scaled (3,000
// writes per PWSYNC_BENCH_WINDOW, default 15 s, instead of 150 s; the pacer
// gets the same window). Reports the steady-state write rate as a share of
// the budget (full windows after the first), the 429s after the first
// window, and the process's peak RSS (VmHWM; simulator and NATS included,
// they run in this process) against the RSS before the run. The same-run
// baseline is the same campaign without the pacer: Graph's 429s and
// Retry-After alone hold it back.
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestCampaignThroughputReport$ -timeout 10m
func TestCampaignThroughputReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") != "1" {
		t.Skip("benchmark: set PWSYNC_BENCH_REPORT=1")
	}
	window := 15 * time.Second
	if v, err := time.ParseDuration(os.Getenv("PWSYNC_BENCH_WINDOW")); err == nil {
		window = v
	}
	users := 10000
	if v, err := strconv.Atoi(os.Getenv("PWSYNC_BENCH_USERS")); err == nil {
		users = v
	}
	const budget = 3000
	paced := benchRun(t, users, budget, window, campaign.NewPacer(budget, window, 1))
	// Baseline, same run: no pacer; Graph's 429s and Retry-After (per
	// item) do the pacing.
	unpaced := benchRun(t, users, budget, window, campaign.NewPacer(0, window, 1))
	for _, r := range []struct {
		name string
		m    benchResult
	}{{"paced", paced}, {"unpaced baseline", unpaced}} {
		t.Logf("%s: %d users, %d writes in %s (window %s, budget %d): per-window %v; steady %.1f%% of budget (min %.1f%%); 429s %d (after first window %d); VmHWM %d MB (before %d MB)",
			r.name, users, r.m.writes, r.m.elapsed.Round(time.Millisecond), window, budget, r.m.counts, 100*r.m.steady, 100*r.m.minShare,
			r.m.all429, r.m.late429, r.m.rssPeak>>20, r.m.rssBefore>>20)
	}
	desc := fmt.Sprintf("campaign writes/s in steady state, budget %d per %s, %d users", budget, window, users)
	benchreport.Emit(benchreport.Figure{Name: "campaign_budget_share", Desc: desc + " (baseline: the budget)", Value: paced.rate, Unit: "writes/s",
		Baseline: budget / window.Seconds(), BaselineName: "write budget", Better: "higher"})
	benchreport.Emit(benchreport.Figure{Name: "campaign_vs_unpaced", Desc: desc + " (baseline: no pacer, 429s and Retry-After)", Value: paced.rate, Unit: "writes/s",
		Baseline: unpaced.rate, BaselineName: "unpaced, same run", Better: "higher"})
	benchreport.Emit(benchreport.Figure{Name: "campaign_429_after_first_window", Desc: "429s after the first window",
		Value: float64(paced.late429), Unit: "429s", Baseline: float64(unpaced.late429), BaselineName: "unpaced, same run", Better: "lower"})
	benchreport.Emit(benchreport.Figure{Name: "campaign_rss_peak", Desc: "VmHWM during the paced run (simulator and NATS in-process)",
		Value: float64(paced.rssPeak >> 20), Unit: "MB", Baseline: float64(paced.rssBefore >> 20), BaselineName: "VmHWM before the run", Better: "lower"})
	if paced.steady < 0.95 || paced.late429 > 0 {
		t.Errorf("steady share %.3f (want >= 0.95), %d 429s after the first window (want 0)", paced.steady, paced.late429)
	}
}

type benchResult struct {
	writes, all429, late429 int
	counts                  []int
	steady, minShare, rate  float64
	elapsed                 time.Duration
	rssBefore, rssPeak      uint64
}

func benchRun(t *testing.T, users, budget int, window time.Duration, pacer *campaign.Pacer) benchResult {
	w := newWorld(t, false, graphsim.Options{WriteBudget: budget, Latency: 5 * time.Millisecond}.TimeScaled(window))
	w.svc.Limits = campaign.Limits{ApprovalThreshold: users, HardCap: users}
	const gid = "cccccccc-0000-4000-8000-00000000000a"
	w.sim.PutGroup(gid, "All staff")
	w.putCloudUsers(gid, "bx", users)
	c, err := w.svc.Create(ctxT(t), campaign.Spec{Name: "bench", Include: campaign.Selector{EntraGroups: []string{gid}},
		Actions: campaign.Actions{RequireChange: true, RevokeSessions: true}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Preview(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.Start(ctxT(t), c.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	w.sim.ResetRequests()
	var m benchResult
	m.rssBefore = vmHWM(t)
	start := time.Now()
	w.runInProcess(c.ID, pacer, 8*time.Minute)
	m.elapsed = time.Since(start)
	m.rssPeak = vmHWM(t)

	var writes []time.Time
	var t0 time.Time
	reqs := w.sim.Requests()
	for _, r := range reqs {
		if r.ItemID != "" && r.Method != http.MethodGet && r.Status/100 == 2 {
			if t0.IsZero() {
				t0 = r.Time
			}
			writes = append(writes, r.Time)
		}
	}
	for _, r := range reqs {
		if r.ItemID != "" && r.Status == http.StatusTooManyRequests {
			m.all429++
			if !r.Time.Before(t0.Add(window)) {
				m.late429++
			}
		}
	}
	m.writes = len(writes)
	if len(writes) != 2*users {
		t.Fatalf("%d writes, want %d", len(writes), 2*users)
	}
	last := writes[len(writes)-1]
	full := int(last.Sub(t0) / window) // windows entirely before the last write
	if full < 2 {
		t.Fatalf("only %d full windows: more users or a shorter window", full)
	}
	m.counts = make([]int, full)
	for _, at := range writes {
		if k := int(at.Sub(t0) / window); k < full {
			m.counts[k]++
		}
	}
	// Steady state: the full windows after the first (whose burst spends a
	// whole budget at once).
	sum := 0
	m.minShare = 1
	for _, n := range m.counts[1:] {
		sum += n
		m.minShare = min(m.minShare, float64(n)/float64(budget))
	}
	m.steady = float64(sum) / float64(len(m.counts)-1) / float64(budget)
	m.rate = float64(sum) / (float64(len(m.counts)-1) * window.Seconds())
	return m
}

// vmHWM is the process's peak resident set size, in bytes.
func vmHWM(t *testing.T) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}
