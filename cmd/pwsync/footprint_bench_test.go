package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"

	"github.com/pwsync/pwsync/testrig/benchreport"
)

// Footprint targets (issue 22).
const (
	targetStrippedMB = 60
	targetIdleRSSMB  = 80
)

// TestFootprintReport measures pwsync's footprint (issue 22): the binary
// (plain `go build`, and stripped as deployments/Dockerfile builds it), what
// the image adds to the base image, and the RSS of a real `pwsync run` child
// process (the stripped binary) against Samba AD and the Graph simulator with
// 1,000 users in scope: at idle after the start, then through a soak of
// resets (half the users synced, half cloud-managed; webhook and delta on),
// RSS and goroutines (go_goroutines of /metrics) sampled every minute.
//
// A series "keeps growing" when both hold: the least-squares slope over the
// second half of the soak, per hour, exceeds max(10% of that half's mean,
// a floor: 8 MB or 10 goroutines); and the mean of the last 3 samples is
// above every sample of the first half. A leak meets both; the noise of a
// plateau (GC cycles, requests in flight) does not set new highs.
//
// Knobs: PWSYNC_SOAK (default 30m; make bench runs 60m), PWSYNC_SOAK_RATE (resets/s, default 3),
// PWSYNC_SOAK_CONNS (LDAP connections resetting, default 4),
// PWSYNC_FOOTPRINT_USERS (default 1000). Not part of make test: make bench.
//
// benchreport: PWSYNC_REQUIRE_AD=1 PWSYNC_BENCH_REPORT=1 PWSYNC_SOAK=60m -run ^TestFootprintReport$ -timeout 90m
func TestFootprintReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") != "1" {
		t.Skip("a 30-minute soak: run by make bench (PWSYNC_BENCH_REPORT=1)")
	}
	soak := envDuration("PWSYNC_SOAK", 30*time.Minute)
	rate := envFloat("PWSYNC_SOAK_RATE", 3)
	nUsers := int(envFloat("PWSYNC_FOOTPRINT_USERS", 1000))

	// The binaries, built from this tree.
	bin := t.TempDir()
	plain := goBuild(t, filepath.Join(bin, "pwsync"), nil)
	stripped := goBuild(t, filepath.Join(bin, "pwsync-stripped"), []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags", "-s -w")
	mb := func(path string) float64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return float64(fi.Size()) / 1e6
	}
	plainMB, strippedMB := mb(plain), mb(stripped)
	t.Logf("binary: plain %.1f MB, stripped %.1f MB", plainMB, strippedMB)
	benchreport.Emit(benchreport.Figure{Name: "binary_stripped_mb", Unit: "MB", Better: "lower",
		Desc:  "pwsync binary, stripped (-trimpath -ldflags \"-s -w\", CGO_ENABLED=0, as deployments/Dockerfile)",
		Value: strippedMB, Target: fmt.Sprintf("<= %d", targetStrippedMB)})
	benchreport.Emit(benchreport.Figure{Name: "binary_plain_mb", Unit: "MB", Better: "lower",
		Desc:  "pwsync binary, plain `go build` (make build)",
		Value: plainMB, Baseline: strippedMB, BaselineName: "the stripped binary, same run"})
	// The image is the base image plus the one file the Dockerfile copies
	// (the stripped binary); the base's size needs a registry, so it is not
	// counted here.
	benchreport.Emit(benchreport.Figure{Name: "image_added_mb", Unit: "MB", Better: "lower",
		Desc:  "container image: what deployments/Dockerfile adds to distroless/static-debian12 (the stripped binary; base image not counted)",
		Value: strippedMB, Target: fmt.Sprintf("<= %d", targetStrippedMB)})

	// The stack: 1,000 bulk users in scope, each with its cloud account.
	s := newStack(t, stackOpts{Webhook: true, ChildBinary: stripped, Pprof: true})
	ou, users := s.dc.BulkUsers(t, "footprint", nUsers, 10*time.Minute)
	s.ou = ou
	for i, u := range users {
		s.cloudUser(u, i%2 == 0)
	}
	started := time.Now()
	// The first full sync reads the whole shared DC: minutes when other
	// tests load it, so a longer wait than the harness's.
	p := s.spawnProcess(t)
	for !ready(s.opsAddr) {
		if time.Since(started) > 15*time.Minute {
			s.dumpLog(t)
			t.Fatal("pwsync not ready after 15 minutes")
		}
		time.Sleep(time.Second)
	}
	pid := p.cmd.Process.Pid
	t.Logf("pwsync ready in %s (pid %d, %d users in scope)", time.Since(started).Round(time.Millisecond), pid, nUsers)
	metricsURL := "http://" + s.opsAddr + "/metrics"
	time.Sleep(envDuration("PWSYNC_FOOTPRINT_IDLE", time.Minute))
	idle := sample(t, pid, metricsURL)
	t.Logf("idle: VmRSS %.1f MB, VmHWM %.1f MB, %d goroutines", idle.rss, idle.hwm, idle.goroutines)
	benchreport.Emit(benchreport.Figure{Name: "idle_rss_mb", Unit: "MB", Better: "lower",
		Desc:  fmt.Sprintf("pwsync run: VmRSS at idle, 1 min after ready, %d users in scope (stripped binary, embedded NATS)", nUsers),
		Value: idle.rss, Target: fmt.Sprintf("<= %d", targetIdleRSSMB)})
	benchreport.Emit(benchreport.Figure{Name: "idle_hwm_mb", Unit: "MB", Better: "lower",
		Desc:  "pwsync run: VmHWM at idle (the start's peak: first full sync of the shared DC, Graph sync)",
		Value: idle.hwm, Baseline: idle.rss, BaselineName: "VmRSS at idle"})

	// The soak: password changes round-robin over the users, helpdesk resets
	// (must change) and the users' own changes (lifting it) in turn,
	// from a few connections: Samba takes ~0.3-1 s per reset on this shared
	// box, one connection alone stays under one reset a second.
	conns := int(envFloat("PWSYNC_SOAK_CONNS", 4))
	var resetCount atomic.Int64
	stop := make(chan struct{})
	resets := make(chan [2]int, conns) // done, failed
	next := make(chan int)
	go func() {
		defer close(next)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			select {
			case next <- i:
			case <-stop:
				return
			default: // every connection busy: the tick is dropped
			}
		}
	}()
	for range conns {
		c := s.dc.Conn(t)
		go func() {
			done, failed := 0, 0
			defer func() { resets <- [2]int{done, failed} }()
			for i := range next {
				// Odd rounds over the users are the users' own changes: a
				// reset of a user who must change already leaves pwdLastSet
				// at 0, which pwsync rightly ignores, so alternating keeps
				// every change a decision with Graph work (require, undo).
				mustChange := (i/len(users))%2 == 0
				if err := soakReset(c, users[i%len(users)].DN, fmt.Sprintf("Soak.Passw0rd-%d", i), mustChange); err != nil {
					failed++
					if failed <= 3 {
						t.Logf("soak reset %d: %v", i, err)
					}
					continue
				}
				done++
				resetCount.Add(1)
			}
		}()
	}
	samples := []footprintSample{idle}
	var heapMid, heapPeak string
	peakHeap := 0.0
	t.Logf("soak: %s at %.1f resets/s", soak, rate)
	soakStart := time.Now()
	for m := 1; time.Duration(m)*time.Minute <= soak; m++ {
		time.Sleep(time.Until(soakStart.Add(time.Duration(m) * time.Minute)))
		smp := sample(t, pid, metricsURL)
		smp.minute = m
		samples = append(samples, smp)
		t.Logf("soak minute %2d: VmRSS %6.1f MB, VmHWM %6.1f MB, Go heap in use %5.1f MB, %4d goroutines, %d password changes and %d Graph requests so far",
			m, smp.rss, smp.hwm, smp.heap, smp.goroutines, resetCount.Load(), len(s.sim.Requests()))
		if m == int(soak/time.Minute)/2 {
			heapMid = heapProfile(t, s.opsAddr, "mid")
		}
		if m > int(soak/time.Minute)/2 && smp.heap > peakHeap {
			// The second half's highest minute: what is live at a peak.
			peakHeap, heapPeak = smp.heap, heapProfile(t, s.opsAddr, "peak")
		}
	}
	// Where the heap went between the soak's middle and its end: what a
	// growth is made of, or that it is the same things, no more.
	if heapMid != "" {
		heapEnd := heapProfile(t, s.opsAddr, "end")
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount", "15", "-sample_index", "inuse_space",
			"-diff_base", heapMid, heapEnd).CombinedOutput()
		t.Logf("heap in use, end minus middle of the soak (go tool pprof -top -diff_base; profiles in %s):\n%s%s",
			filepath.Dir(heapEnd), out, errText(err))
		if heapPeak != "" {
			out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount", "15", "-sample_index", "inuse_space",
				"-diff_base", heapEnd, heapPeak).CombinedOutput()
			t.Logf("heap in use at the second half's peak minute (%.1f MB in use) minus the end:\n%s%s", peakHeap, out, errText(err))
		}
	}
	close(stop)
	var r [2]int
	for range conns {
		x := <-resets
		r[0], r[1] = r[0]+x[0], r[1]+x[1]
	}
	t.Logf("soak: %d resets (%d failed), %d Graph requests", r[0], r[1], len(s.sim.Requests()))
	if r[0] == 0 {
		t.Fatal("soak: no reset went through")
	}

	soakSamples := samples[1:]
	rss := func(x footprintSample) float64 { return x.rss }
	gor := func(x footprintSample) float64 { return float64(x.goroutines) }
	rssGrowth, rssGrowing := growth(soakSamples, rss, 8)
	gorGrowth, gorGrowing := growth(soakSamples, gor, 10)
	last := soakSamples[len(soakSamples)-1]
	desc := fmt.Sprintf("%s soak, %.0f resets/s (%d done), %d users", soak, rate, r[0], nUsers)
	benchreport.Emit(benchreport.Figure{Name: "soak_rss_last_mb", Unit: "MB", Better: "lower",
		Desc:  "VmRSS at the end of the " + desc,
		Value: last.rss, Baseline: idle.rss, BaselineName: "VmRSS at idle before the soak"})
	benchreport.Emit(benchreport.Figure{Name: "soak_rss_growth_mb_per_h", Unit: "MB/h", Better: "lower",
		Desc:  "VmRSS slope over the second half of the " + desc,
		Value: rssGrowth, Target: fmt.Sprintf("<= %.1f", math.Max(0.1*mean(soakSamples[len(soakSamples)/2:], rss), 8))}) // 10% of the mean per hour, at least 8 MB/h
	benchreport.Emit(benchreport.Figure{Name: "soak_goroutines_last", Unit: "goroutines", Better: "lower",
		Desc:  "go_goroutines at the end of the " + desc,
		Value: float64(last.goroutines), Baseline: float64(idle.goroutines), BaselineName: "at idle before the soak"})
	benchreport.Emit(benchreport.Figure{Name: "soak_goroutine_growth_per_h", Unit: "goroutines/h", Better: "lower",
		Desc:  "go_goroutines slope over the second half of the " + desc,
		Value: gorGrowth, Target: fmt.Sprintf("<= %.1f", math.Max(0.1*mean(soakSamples[len(soakSamples)/2:], gor), 10))}) // 10% of the mean per hour, at least 10/h

	if strippedMB > targetStrippedMB {
		t.Errorf("stripped binary %.1f MB, target <= %d MB", strippedMB, targetStrippedMB)
	}
	if idle.rss > targetIdleRSSMB {
		t.Errorf("idle RSS %.1f MB, target <= %d MB", idle.rss, targetIdleRSSMB)
	}
	if rssGrowing {
		t.Errorf("RSS keeps growing: %.1f MB/h over the second half", rssGrowth)
	}
	if gorGrowing {
		t.Errorf("goroutines keep growing: %.1f/h over the second half", gorGrowth)
	}
}

func ready(opsAddr string) bool {
	resp, err := http.Get("http://" + opsAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

type footprintSample struct {
	minute     int
	rss, hwm   float64 // MB
	heap       float64 // MB, go_memstats_heap_inuse_bytes
	goroutines int
}

// sample reads VmRSS and VmHWM of pid and go_goroutines from /metrics.
func sample(t *testing.T, pid int, metricsURL string) footprintSample {
	t.Helper()
	var s footprintSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the child's status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != "VmRSS" && k != "VmHWM" {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		if err != nil {
			t.Fatalf("/proc/%d/status %s: %v", pid, line, err)
		}
		if k == "VmRSS" {
			s.rss = float64(kb) / 1000
		} else {
			s.hwm = float64(kb) / 1000
		}
	}
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			// Go's heap beside the RSS: tells the runtime's own growth from
			// the process's (the embedded NATS server's caches, fragmentation).
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				s.heap = f / 1e6
			}
		}
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_goroutines %q: %v", v, err)
			}
			s.goroutines = int(f)
		}
	}
	if s.goroutines == 0 {
		t.Fatal("/metrics has no go_goroutines")
	}
	return s
}

// growth is the least-squares slope of f over the second half of samples
// (one a minute), per hour, and whether the series keeps growing (see
// TestFootprintReport).
func growth(samples []footprintSample, f func(footprintSample) float64, floor float64) (perHour float64, growing bool) {
	half := samples[len(samples)/2:]
	if len(half) < 2 {
		return 0, false
	}
	var sx, sy, sxx, sxy float64
	for i, s := range half {
		x, y := float64(i), f(s)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	n := float64(len(half))
	perHour = 60 * (n*sxy - sx*sy) / (n*sxx - sx*sx)
	firstMax := math.Inf(-1)
	for _, s := range samples[:len(samples)/2] {
		firstMax = math.Max(firstMax, f(s))
	}
	tail := samples[max(len(samples)-3, 0):]
	return perHour, perHour > math.Max(0.1*mean(half, f), floor) && mean(tail, f) > firstMax
}

func mean(samples []footprintSample, f func(footprintSample) float64) float64 {
	var sum float64
	for _, s := range samples {
		sum += f(s)
	}
	return sum / float64(len(samples))
}

// soakReset is a helpdesk reset: a new password, then must change at next
// sign-in. Errors are returned, not fatal: one refused modify in 30 minutes
// is noise, not a failed soak.
// soakReset sets a new password; with mustChange, as the helpdesk does
// (pwdLastSet 0 after), else as the user's own change.
func soakReset(c *ldap.Conn, dn, pw string, mustChange bool) error {
	u := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace("unicodePwd", []string{string(b)})
	if err := c.Modify(m); err != nil {
		return fmt.Errorf("setting the password of %s: %w", dn, err)
	}
	if !mustChange {
		return nil
	}
	m = ldap.NewModifyRequest(dn, nil)
	m.Replace("pwdLastSet", []string{"0"})
	if err := c.Modify(m); err != nil {
		return fmt.Errorf("setting must-change on %s: %w", dn, err)
	}
	return nil
}

// goBuild builds ./cmd/pwsync of this module into out.
func goBuild(t *testing.T, out string, env []string, flags ...string) string {
	t.Helper()
	args := append(append([]string{"build"}, flags...), "-o", out, "./cmd/pwsync")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Second))
	return out
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}

func envFloat(key string, def float64) float64 {
	if f, err := strconv.ParseFloat(os.Getenv(key), 64); err == nil && f > 0 {
		return f
	}
	return def
}

// heapProfile saves the child's heap profile (ops.pprof) and returns its
// path: in PWSYNC_SOAK_PROFILES when set (kept), else in the test's temp dir.
func heapProfile(t *testing.T, opsAddr, name string) string {
	t.Helper()
	dir := os.Getenv("PWSYNC_SOAK_PROFILES")
	if dir == "" {
		dir = t.TempDir()
	}
	resp, err := http.Get("http://" + opsAddr + "/debug/pprof/heap")
	if err != nil {
		t.Logf("heap profile %s: %v", name, err)
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Logf("heap profile %s: %s", name, resp.Status)
		return ""
	}
	path := filepath.Join(dir, "heap-"+name+".pb.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("heap profile: %v", err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Logf("heap profile %s: %v", name, err)
		return ""
	}
	return path
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}
