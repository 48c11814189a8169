// Package benchreport is the line format by which benchmarks hand their
// figures to `make bench` (cmd/benchreport), which runs them and writes
// docs/benchmarks.md:
//
//	BENCHREPORT name=ad_reset_to_graph_p99 value=20.9 unit=ms baseline=2012 baseline_name="DirSync poll every 2 s" ratio=0.0104 better=lower desc="AD reset -> Graph PATCH, p99" target="<= 0.5x baseline" samples=200
//
// A figure comes with a baseline measured in the same run (ratio = value /
// baseline) or with a limit it is held against (a write budget, a
// service's rate limit: not a baseline, nobody could pick it instead), and
// with its target (see Target), which cmd/benchreport judges. A package takes part by printing such lines (Emit) from
// a test or benchmark and by naming the command in a comment of one of its
// _test.go files, e.g.
//
//	// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestThroughputReport$
//
// (leading KEY=VALUE words are environment, the rest are go test flags;
// cmd/benchreport adds -count=1 -v and the package). cmd/benchreport
// judges each figure against its Target, shows target and verdict in the
// table and exits non-zero naming every figure that missed.
package benchreport

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Prefix starts every report line.
const Prefix = "BENCHREPORT"

// Figure is one reported number and its same-run baseline.
type Figure struct {
	Name         string  // unique, snake_case: ad_reset_to_graph_p99
	Desc         string  // what it measures, for the table
	Value        float64 // the figure
	Unit         string  // ms, notif/s, users/s...
	Baseline     float64 // measured in the same run
	BaselineName string  // what the baseline is
	Better       string  // "lower" or "higher"
	Limit        float64 // an external limit the figure is held against (0: none)
	LimitName    string  // what the limit is: "write budget", "Exchange 30/min"
	// Target is what the figure must reach: "<= 50", ">= 10000",
	// "<= 2x baseline", ">= 0.95x limit", "<= 0" (see ParseTarget), or
	// several joined by " and ". The comparison must agree with Better.
	// Empty: no target.
	Target  string
	Samples int    // how many samples a percentile or max is taken over (0: not a sample statistic)
	Package string // set by Parse's caller: where it came from
}

// Ratio is Value / Baseline (0 without a baseline).
func (f Figure) Ratio() float64 {
	if f.Baseline == 0 {
		return 0
	}
	return f.Value / f.Baseline
}

// Line formats f as a report line.
func (f Figure) Line() string {
	s := fmt.Sprintf("%s name=%s value=%s unit=%s baseline=%s baseline_name=%q ratio=%s better=%s desc=%q",
		Prefix, f.Name, num(f.Value), f.Unit, num(f.Baseline), f.BaselineName, num(f.Ratio()), f.Better, f.Desc)
	if f.Limit != 0 || f.LimitName != "" {
		s += fmt.Sprintf(" limit=%s limit_name=%q", num(f.Limit), f.LimitName)
	}
	if f.Target != "" {
		s += fmt.Sprintf(" target=%q", f.Target)
	}
	if f.Samples != 0 {
		s += fmt.Sprintf(" samples=%d", f.Samples)
	}
	return s
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// Emit prints f on stdout, where go test passes it through (run with -v).
func Emit(f Figure) { Fprint(os.Stdout, f) }

// Fprint writes f's line to w.
func Fprint(w io.Writer, f Figure) { fmt.Fprintln(w, f.Line()) }

var field = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// Parse reads a report line anywhere in s (go test may indent it); ok is
// false when s holds none. A line without name or value is an error.
func Parse(s string) (f Figure, ok bool, err error) {
	i := strings.Index(s, Prefix+" ")
	if i < 0 {
		return f, false, nil
	}
	kv := map[string]string{}
	for _, m := range field.FindAllStringSubmatch(s[i+len(Prefix):], -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		kv[m[1]] = v
	}
	f = Figure{Name: kv["name"], Unit: kv["unit"], BaselineName: kv["baseline_name"], Better: kv["better"], Desc: kv["desc"],
		LimitName: kv["limit_name"], Target: kv["target"]}
	if f.Name == "" {
		return f, true, fmt.Errorf("report line without name: %q", s)
	}
	if f.Value, err = strconv.ParseFloat(kv["value"], 64); err != nil {
		return f, true, fmt.Errorf("report %s: value: %w", f.Name, err)
	}
	if b := kv["baseline"]; b != "" {
		if f.Baseline, err = strconv.ParseFloat(b, 64); err != nil {
			return f, true, fmt.Errorf("report %s: baseline: %w", f.Name, err)
		}
	}
	if l := kv["limit"]; l != "" {
		if f.Limit, err = strconv.ParseFloat(l, 64); err != nil {
			return f, true, fmt.Errorf("report %s: limit: %w", f.Name, err)
		}
	}
	if n := kv["samples"]; n != "" {
		if f.Samples, err = strconv.Atoi(n); err != nil {
			return f, true, fmt.Errorf("report %s: samples: %w", f.Name, err)
		}
	}
	return f, true, nil
}
