package graph

import (
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{" 2.128 ", 2128 * time.Millisecond},
		{"0", 0},
		{"-3", 0},
		{"NaN", 0},
		{"Inf", MaxRetryAfter},
		{"1e300", MaxRetryAfter},
		{"99999999999", MaxRetryAfter},
		{"Tue, 03 Mar 2026 09:00:30 GMT", 30 * time.Second},
		{"Tue, 03 Mar 2026 08:00:00 GMT", 0},
		{"Fri, 31 Dec 9999 23:59:59 GMT", MaxRetryAfter},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzParseRetryAfter: any header value gives a wait within [0, MaxRetryAfter].
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"5", "2.128", "1e308", "-0", "NaN", "+Inf", "0x10", "Tue, 03 Mar 2026 09:00:30 GMT"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := ParseRetryAfter(v, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v", v, d)
		}
	})
}
