package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/benchreport"
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
	fig := benchreport.Figure{Name: "x_p99", Desc: "X p99", Value: 20.94, Unit: "ms", Baseline: 2012, BaselineName: "polling", Better: "lower", Package: "cmd/pwsync"}
	out := strings.NewReader("=== RUN X\n    x_test.go:1: " + fig.Line() + "\n--- PASS\n")
	figs, err := collect(out, "cmd/pwsync")
	if err != nil || len(figs) != 1 || figs[0] != fig {
		t.Fatalf("collect: %+v %v", figs, err)
	}
	res := []result{{Job: job{Dir: "cmd/pwsync", Args: []string{"-bench", "X"}}, Figures: figs, Duration: 3 * time.Second}}
	sec := render(res, "2 CPUs (nproc), Test CPU, 24.0 GiB RAM, go1.26, linux/amd64", time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), "make bench")
	for _, want := range []string{"| X p99 (`x_p99`) | 20.9 ms | 2,012 ms (polling) | 0.0104x | lower | cmd/pwsync |",
		"2 CPUs (nproc), Test CPU", "2026-11-22 08:00 UTC", "`make bench`", "go test -count=1 -v -timeout 60m -bench X ./cmd/pwsync`: ok, 3s, 1 figures"} {
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
