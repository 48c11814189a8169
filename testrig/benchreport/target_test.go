package benchreport

import "testing"

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		f     Figure
		want  Verdict
		bound float64
	}{
		{"absolute met", Figure{Name: "a_p99", Value: 49.9, Better: "lower", Target: "<= 50", Samples: 100}, Met, 50},
		{"absolute edge met", Figure{Name: "a", Value: 50, Better: "lower", Target: "<= 50"}, Met, 50},
		{"absolute missed", Figure{Name: "a_p99", Value: 52.7, Better: "lower", Target: "<= 50"}, Missed, 50},
		{"higher missed", Figure{Name: "w", Value: 9417, Better: "higher", Target: ">= 10,000"}, Missed, 10000},
		{"higher met", Figure{Name: "w", Value: 35031, Better: "higher", Target: ">= 10000"}, Met, 10000},
		{"zero 429s met", Figure{Name: "z", Value: 0, Better: "lower", Target: "<= 0"}, Met, 0},
		{"zero 429s missed", Figure{Name: "z", Value: 1, Better: "lower", Target: "<= 0"}, Missed, 0},
		{"baseline multiple met", Figure{Name: "b", Value: 19, Baseline: 10, Better: "lower", Target: "<= 2x baseline"}, Met, 20},
		{"baseline multiple missed", Figure{Name: "b", Value: 21, Baseline: 10, Better: "lower", Target: "<= 2x baseline"}, Missed, 20},
		{"limit share met", Figure{Name: "c", Value: 199, Limit: 200, Better: "higher", Target: ">= 0.95x limit"}, Met, 190},
		{"limit share missed", Figure{Name: "c", Value: 189, Limit: 200, Better: "higher", Target: ">= 0.95x limit"}, Missed, 190},
		{"no target", Figure{Name: "n", Value: 1}, NoTarget, 0},
		{"relative without baseline", Figure{Name: "b", Value: 1, Better: "lower", Target: "<= 2x baseline"}, Invalid, 0},
		{"relative without limit", Figure{Name: "b", Value: 1, Better: "higher", Target: ">= 1x limit"}, Invalid, 0},
		{"disagrees with better", Figure{Name: "b", Value: 1, Better: "lower", Target: ">= 1"}, Invalid, 0},
		{"garbage", Figure{Name: "b", Value: 1, Target: "fast"}, Invalid, 0},
		{"p99 of 50", Figure{Name: "x_p99", Value: 1, Better: "lower", Target: "<= 50", Samples: 50}, Invalid, 0},
		{"p99 of 50 without target", Figure{Name: "x_p99", Value: 1, Samples: 50}, Invalid, 0},
		{"p50 of 10", Figure{Name: "x_p50", Value: 1, Better: "lower", Target: "<= 50", Samples: 10}, Met, 50},
		{"max of 10", Figure{Name: "x_max", Value: 1, Better: "lower", Target: "<= 50", Samples: 10}, Met, 50},
		{"both parts met", Figure{Name: "w", Value: 12000, Baseline: 20000, Better: "higher", Target: ">= 10000 and >= 0.5x baseline"}, Met, 10000},
		{"second part missed", Figure{Name: "w", Value: 12000, Baseline: 30000, Better: "higher", Target: ">= 10000 and >= 0.5x baseline"}, Missed, 10000},
		{"first part missed", Figure{Name: "w", Value: 9000, Baseline: 10000, Better: "higher", Target: ">= 10000 and >= 0.5x baseline"}, Missed, 10000},
		{"bad second part", Figure{Name: "w", Value: 9000, Better: "higher", Target: ">= 10000 and quickly"}, Invalid, 0},
	} {
		got := tc.f.Judge()
		if got.Verdict != tc.want || (tc.want == Met || tc.want == Missed) && got.Parts[0].Value != tc.bound {
			t.Errorf("%s: got %+v, want %v bound %v", tc.name, got, tc.want, tc.bound)
		}
		if (got.Verdict == Invalid) != (got.Why != "") {
			t.Errorf("%s: verdict %v with why %q", tc.name, got.Verdict, got.Why)
		}
	}
}
