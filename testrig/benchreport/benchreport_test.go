package benchreport

import (
	"math"
	"testing"
)

func TestLineRoundTrips(t *testing.T) {
	f := Figure{Name: "ad_reset_to_graph_p99", Desc: `AD reset -> Graph "PATCH", p99`, Value: 20.9, Unit: "ms",
		Baseline: 2012, BaselineName: "DirSync poll every 2 s", Better: "lower", Target: "<= 0.5x baseline", Samples: 200}
	budget := Figure{Name: "campaign_writes_per_s", Value: 199, Unit: "writes/s", Limit: 200, LimitName: "write budget", Better: "higher", Target: ">= 0.95x limit"}
	for _, f := range []Figure{f, budget} {
		got, ok, err := Parse(f.Line())
		if !ok || err != nil || got != f {
			t.Fatalf("got %+v ok=%v err=%v, want %+v", got, ok, err, f)
		}
	}
	for _, prefix := range []string{"", "    e2e_test.go:230: ", "\t"} {
		got, ok, err := Parse(prefix + f.Line())
		if !ok || err != nil {
			t.Fatalf("%q: ok=%v err=%v", prefix, ok, err)
		}
		if got != f {
			t.Fatalf("got %+v, want %+v", got, f)
		}
	}
	if math.Abs(f.Ratio()-20.9/2012) > 1e-12 {
		t.Fatalf("ratio %v", f.Ratio())
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		line    string
		ok, bad bool
	}{
		{"ok  	github.com/x 1.2s", false, false},
		{"BENCHREPORT value=1", true, true},
		{"BENCHREPORT name=x value=abc", true, true},
		{"BENCHREPORT name=x value=1 baseline=zz", true, true},
		{"BENCHREPORT name=x value=1", true, false},
		{"BENCHREPORT name=x value=1 limit=q", true, true},
		{"BENCHREPORT name=x value=1 samples=1.5", true, true},
	} {
		_, ok, err := Parse(tc.line)
		if ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("%q: ok=%v err=%v", tc.line, ok, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Figure{Name: "a", Value: 1, Baseline: 2, Desc: "x y"}.Line())
	f.Add(`BENCHREPORT name="unterminated value=1`)
	f.Fuzz(func(t *testing.T, s string) {
		fig, ok, err := Parse(s)
		if ok && err == nil && fig.Name == "" {
			t.Fatalf("accepted a figure without a name: %q", s)
		}
	})
}
