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

// Judgement is a Verdict with the bound it was judged against.
type Judgement struct {
	Verdict Verdict
	Bound   float64 // the target in the figure's unit
	Op      string  // "<=" or ">="
	Why     string  // for Invalid
}

// Judge holds f against its target. A relative target needs its baseline
// or limit; the comparison must agree with Better; a percentile needs
// enough samples to have one above it (>= 100 for a p99, else report the
// max).
func (f Figure) Judge() Judgement {
	if why := f.percentileProblem(); why != "" {
		return Judgement{Verdict: Invalid, Why: why}
	}
	if f.Target == "" {
		return Judgement{Verdict: NoTarget}
	}
	t, err := ParseTarget(f.Target)
	if err != nil {
		return Judgement{Verdict: Invalid, Why: err.Error()}
	}
	if (t.Op == "<=" && f.Better == "higher") || (t.Op == ">=" && f.Better == "lower") {
		return Judgement{Verdict: Invalid, Op: t.Op, Why: fmt.Sprintf("target %q disagrees with better=%s", f.Target, f.Better)}
	}
	bound := t.Factor
	switch t.Of {
	case "baseline":
		if f.Baseline == 0 {
			return Judgement{Verdict: Invalid, Op: t.Op, Why: "target relative to a baseline, but no baseline measured"}
		}
		bound *= f.Baseline
	case "limit":
		if f.Limit == 0 {
			return Judgement{Verdict: Invalid, Op: t.Op, Why: "target relative to a limit, but no limit given"}
		}
		bound *= f.Limit
	}
	j := Judgement{Verdict: Missed, Bound: bound, Op: t.Op}
	if (t.Op == "<=" && f.Value <= bound) || (t.Op == ">=" && f.Value >= bound) {
		j.Verdict = Met
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
