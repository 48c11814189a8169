package benchreport

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// TargetExpr is a parsed Figure.Target: the figure must be Op (<= or >=)
// Factor, or Factor times the same-run baseline or the limit (Of).
type TargetExpr struct {
	Op     string  // "<=" or ">="
	Factor float64 // the bound itself, or the multiple of Of
	Of     string  // "", "baseline" or "limit"
}

var targetRE = regexp.MustCompile(`^(<=|>=)\s*([0-9][0-9_,.eE+-]*)\s*(?:x\s*(baseline|limit))?$`)

// ParseTarget reads "<= 50", ">= 10,000", "<= 2x baseline", ">= 0.95x limit".
func ParseTarget(s string) (TargetExpr, error) {
	m := targetRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return TargetExpr{}, fmt.Errorf("target %q: want \"<= N\", \">= N\", \"<= Nx baseline\" or \">= Nx limit\"", s)
	}
	v, err := strconv.ParseFloat(strings.NewReplacer(",", "", "_", "").Replace(m[2]), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return TargetExpr{}, fmt.Errorf("target %q: bad number %q", s, m[2])
	}
	return TargetExpr{Op: m[1], Factor: v, Of: m[3]}, nil
}

// Verdict is a figure judged against its target.
type Verdict int

const (
	NoTarget Verdict = iota // the figure states no target
	Met
	Missed
	Invalid // the target or the figure cannot be judged (see Judgement.Why)
)

func (v Verdict) String() string {
	return [...]string{"no target", "met", "MISSED", "INVALID"}[v]
}

// Judgement is a Verdict with the bounds it was judged against.
type Judgement struct {
	Verdict Verdict
	Parts   []Bound // one per part of the target ("... and ...")
	Why     string  // for Invalid
}

// Bound is one part of a target resolved in the figure's unit.
type Bound struct {
	TargetExpr
	Value float64 // the bound in the figure's unit
	Met   bool
}

// Judge holds f against its target, every part of it ("<= 50 and <= 2x
// baseline"). A relative part needs its baseline or limit; the comparison
// must agree with Better; a percentile needs enough samples to have one
// above it (>= 100 for a p99, else report the max).
func (f Figure) Judge() Judgement {
	if why := f.percentileProblem(); why != "" {
		return Judgement{Verdict: Invalid, Why: why}
	}
	if f.Target == "" {
		return Judgement{Verdict: NoTarget}
	}
	j := Judgement{Verdict: Met}
	for _, part := range strings.Split(f.Target, " and ") {
		t, err := ParseTarget(part)
		if err != nil {
			return Judgement{Verdict: Invalid, Why: err.Error()}
		}
		if (t.Op == "<=" && f.Better == "higher") || (t.Op == ">=" && f.Better == "lower") {
			return Judgement{Verdict: Invalid, Why: fmt.Sprintf("target %q disagrees with better=%s", part, f.Better)}
		}
		b := Bound{TargetExpr: t, Value: t.Factor}
		switch t.Of {
		case "baseline":
			if f.Baseline == 0 {
				return Judgement{Verdict: Invalid, Why: "target relative to a baseline, but no baseline measured"}
			}
			b.Value *= f.Baseline
		case "limit":
			if f.Limit == 0 {
				return Judgement{Verdict: Invalid, Why: "target relative to a limit, but no limit given"}
			}
			b.Value *= f.Limit
		}
		b.Met = (t.Op == "<=" && f.Value <= b.Value) || (t.Op == ">=" && f.Value >= b.Value)
		if !b.Met {
			j.Verdict = Missed
		}
		j.Parts = append(j.Parts, b)
	}
	return j
}

var percentileName = regexp.MustCompile(`_p(\d{2}(?:\d)?)$`)

// percentileProblem says why f's percentile is not supported by its sample
// ("" when it is, or f is no percentile or does not say its sample size):
// a pQ needs at least 100/(100-Q) samples, 100 for a p99.
func (f Figure) percentileProblem() string {
	m := percentileName.FindStringSubmatch(f.Name)
	if m == nil || f.Samples == 0 {
		return ""
	}
	q, _ := strconv.Atoi(m[1])
	if q >= 100 || q <= 0 {
		return ""
	}
	need := int(math.Ceil(100 / float64(100-q)))
	if f.Samples < need {
		return fmt.Sprintf("p%d of %d samples (needs >= %d): report the max", q, f.Samples, need)
	}
	return ""
}
