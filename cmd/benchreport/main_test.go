package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/benchreport"
)

func TestDiscoverDirectives(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a/x_test.go", "package a\n//benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestReport$\n")
	write("b/c/y_test.go", "package c\n\t// benchreport: -run ^$ -bench BenchmarkZ -benchtime 1x\n")
	write("b/c/y.go", "package c\n//benchreport: -run ignored-not-a-test-file\n")
	write(".hidden/z_test.go", "package z\n//benchreport: -run hidden\n")
	jobs, err := discover(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 {
		t.Fatalf("jobs: %+v", jobs)
	}
	if got := jobs[0].Command(); got != "PWSYNC_BENCH_REPORT=1 go test -count=1 -v -timeout 60m -run ^TestReport$ ./a" {
		t.Errorf("command: %s", got)
	}
	if got := jobs[1].Command(); got != "go test -count=1 -v -timeout 60m -run ^$ -bench BenchmarkZ -benchtime 1x ./b/c" {
		t.Errorf("command: %s", got)
	}
}

func TestRepositoryHasDirectives(t *testing.T) {
	jobs, err := discover(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, j := range jobs {
		dirs[filepath.ToSlash(j.Dir)] = true
	}
	for _, want := range []string{"cmd/pwsync", "services/ingest/webhook", "services/ingest/adwatch"} {
		if !dirs[want] {
			t.Errorf("no //benchreport: directive in %s (found %v)", want, dirs)
		}
	}
}

func TestRenderAndUpdateKeepTheRest(t *testing.T) {
	fig := benchreport.Figure{Name: "x_p99", Desc: "X p99", Value: 20.94, Unit: "ms", Baseline: 2012, BaselineName: "polling", Better: "lower",
		Target: "<= 0.5x baseline", Samples: 200, Package: "cmd/pwsync"}
	out := strings.NewReader("=== RUN X\n    x_test.go:1: " + fig.Line() + "\n--- PASS\n")
	figs, err := collect(out, "cmd/pwsync")
	if err != nil || len(figs) != 1 || figs[0] != fig {
		t.Fatalf("collect: %+v %v", figs, err)
	}
	res := []result{{Job: job{Dir: "cmd/pwsync", Args: []string{"-bench", "X"}}, Figures: figs, Duration: 3 * time.Second}}
	sec := render(res, "2 CPUs (nproc), Test CPU, 24.0 GiB RAM, go1.26, linux/amd64", time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), "make bench (= go run ./cmd/benchreport -out docs/benchmarks.md)")
	for _, want := range []string{"| X p99 (`x_p99`) | 20.9 ms (n=200) | 2,012 ms (polling) | 0.0104x | - | <= 0.5x baseline (1,006 ms) | met | cmd/pwsync |",
		"Targets: 1 met, 0 missed or not judgeable, 0 figure(s) without a target.",
		"2 CPUs (nproc), Test CPU", "2026-11-22 08:00 UTC", "- Command: make bench (= go run ./cmd/benchreport -out docs/benchmarks.md)", "go test -count=1 -v -timeout 60m -bench X ./cmd/pwsync`: ok, 3s, 1 figures"} {
		if !strings.Contains(sec, want) {
			t.Errorf("section lacks %q:\n%s", want, sec)
		}
	}
	doc := "# Benchmarks\n\nMachine: hand-written.\n\n## Old figure\n\nkept\n"
	once := update(doc, sec)
	if !strings.HasPrefix(once, "# Benchmarks\n\n"+beginMarker) || !strings.HasSuffix(once, "## Old figure\n\nkept\n") {
		t.Fatalf("insert:\n%s", once)
	}
	twice := update(once, strings.Replace(sec, "20.9 ms", "19.0 ms", 1))
	if strings.Count(twice, beginMarker) != 1 || !strings.Contains(twice, "19.0 ms") || strings.Contains(twice, "20.9 ms") || !strings.HasSuffix(twice, "kept\n") {
		t.Fatalf("replace:\n%s", twice)
	}
}

func TestFailuresNameEveryMissedFigure(t *testing.T) {
	figs := []benchreport.Figure{
		{Name: "webhook_1x16_notif_per_s", Value: 9417, Unit: "notif/s", Baseline: 21502, Better: "higher", Target: ">= 10000 and >= 0.5x baseline"},
		{Name: "webhook_10x64_p99", Value: 52.7, Unit: "ms", Better: "lower", Target: "<= 50", Samples: 1000},
		{Name: "campaign_writes_per_s", Value: 199, Unit: "writes/s", Limit: 200, LimitName: "write budget", Better: "higher", Target: ">= 0.95x limit"},
		{Name: "ad_p99", Value: 20, Unit: "ms", Better: "lower", Target: "<= 50", Samples: 50},
		{Name: "untargeted", Value: 1, Unit: "ms", Better: "lower"},
	}
	res := []result{{Job: job{Dir: "x"}, Figures: figs}}
	err := failures(res)
	if err == nil {
		t.Fatal("no error for missed targets")
	}
	for _, want := range []string{"3 figure(s) missed", "webhook_1x16_notif_per_s (9,417 notif/s, target >= 10,000 notif/s and >= 0.5x baseline (10,751 notif/s))",
		"webhook_10x64_p99 (52.7 ms, target <= 50 ms)", "ad_p99 (cannot be judged: p99 of 50 samples"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "campaign_writes_per_s") || strings.Contains(err.Error(), "untargeted") {
		t.Errorf("error names a figure that met or has no target: %v", err)
	}
	sec := render(res, "host", time.Now(), "make bench")
	for _, want := range []string{"| 200 writes/s (write budget) | >= 0.95x limit (190 writes/s) | met |", "| **MISSED** |",
		"Targets: 1 met, 3 missed or not judgeable (`webhook_1x16_notif_per_s`, `webhook_10x64_p99`, `ad_p99`), 1 figure(s) without a target."} {
		if !strings.Contains(sec, want) {
			t.Errorf("section lacks %q:\n%s", want, sec)
		}
	}
	if failures([]result{{Job: job{Dir: "x"}, Figures: figs[2:3]}}) != nil {
		t.Error("error although every target was met")
	}
}

// TestEveryBenchmarkReports: `make bench` writes down every benchmark of
// the repository. A Benchmark function is covered when a //benchreport:
// directive of its package selects it with -bench, when the package's
// tests call it (a report test runs it against its baseline), or when its
// doc comment says "Reported by TestX" and a directive of the package runs
// TestX (a report built from the same operations).
func TestEveryBenchmarkReports(t *testing.T) {
	root := filepath.Join("..", "..")
	jobs, err := discover(root)
	if err != nil {
		t.Fatal(err)
	}
	benchRE := map[string][]*regexp.Regexp{} // package dir -> its -bench patterns
	runRE := map[string][]*regexp.Regexp{}   // package dir -> its -run patterns
	for _, j := range jobs {
		for i, a := range j.Args {
			if i+1 < len(j.Args) && (a == "-bench" || a == "-run") {
				m := map[string]map[string][]*regexp.Regexp{"-bench": benchRE, "-run": runRE}[a]
				m[j.Dir] = append(m[j.Dir], regexp.MustCompile(j.Args[i+1]))
			}
		}
	}
	reportedBy := regexp.MustCompile(`(?m)^// Reported by (Test\w+)`)
	funcRE := regexp.MustCompile(`(?m)^func (Benchmark\w+)\(`)
	found := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(p))
		for _, m := range funcRE.FindAllStringSubmatchIndex(string(data), -1) {
			name := string(data[m[2]:m[3]])
			found++
			matches := func(res []*regexp.Regexp, s string) bool {
				return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
			}
			if matches(benchRE[dir], name) || calledIn(t, filepath.Dir(p), name) {
				continue
			}
			if r := reportedBy.FindStringSubmatch(docComment(string(data[:m[0]]))); r != nil && matches(runRE[dir], r[1]) {
				continue
			}
			t.Errorf("%s: %s is in no //benchreport: directive (-bench) and no report test of %s calls it: `make bench` would not write it down", p, name, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no Benchmark functions found: the walk is broken")
	}
}

// calledIn says whether a _test.go file of dir uses name other than in its
// definition and comments.
func calledIn(t *testing.T, dir, name string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	use := regexp.MustCompile(`\b` + name + `\b`)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			l := strings.TrimSpace(line)
			if strings.HasPrefix(l, "//") || strings.HasPrefix(l, "func "+name+"(") {
				continue
			}
			if use.MatchString(l) {
				return true
			}
		}
	}
	return false
}

// docComment is the comment block that ends src (the lines just above a func).
func docComment(src string) string {
	lines := strings.Split(strings.TrimRight(src, "\n"), "\n")
	i := len(lines)
	for i > 0 && strings.HasPrefix(lines[i-1], "//") {
		i--
	}
	return strings.Join(lines[i:], "\n")
}
