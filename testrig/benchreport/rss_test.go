package benchreport

import (
	"runtime/debug"
	"testing"
)

// TestPeakRSSIsMeasuredAroundTheWork: after a reset the high-water mark
// falls back below a peak reached before it, and touching memory raises it.
func TestPeakRSSIsMeasuredAroundTheWork(t *testing.T) {
	touch := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		return b
	}
	big := touch(256 << 20)
	before, err := PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	big = nil
	_ = big
	debug.FreeOSMemory() // hand the pages back, so the current RSS falls
	if err := ResetPeakRSS(); err != nil {
		t.Skipf("no clear_refs here: %v", err)
	}
	after, err := PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	if after >= before-128<<20 {
		t.Fatalf("VmHWM %d MB after the reset, %d MB before: the reset did not take", after>>20, before>>20)
	}
	small := touch(64 << 20)
	peak, err := PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	if peak < after+48<<20 {
		t.Fatalf("VmHWM %d MB after touching 64 MB (was %d MB)", peak>>20, after>>20)
	}
	_ = small[0]
}
