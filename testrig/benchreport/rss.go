package benchreport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory figures are the process's resident set high-water mark (VmHWM),
// measured around the work: ResetPeakRSS before it, PeakRSS after it. Go
// heap bytes are not RSS (they leave out stacks, the runtime, cgo and
// fragmentation), so targets stated as RSS are held against this.

// ResetPeakRSS sets this process's VmHWM back to its current RSS (Linux:
// "5" into /proc/self/clear_refs), so a later PeakRSS covers only what
// came after.
func ResetPeakRSS() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset VmHWM: %w", err)
	}
	return nil
}

// PeakRSS is this process's VmHWM in bytes.
func PeakRSS() (uint64, error) { return statusKB("/proc/self/status", "VmHWM:") }

// RSS is this process's current resident set (VmRSS) in bytes.
func RSS() (uint64, error) { return statusKB("/proc/self/status", "VmRSS:") }

// PeakRSSOf is the VmHWM of another process, in bytes.
func PeakRSSOf(pid int) (uint64, error) {
	return statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmHWM:")
}

func statusKB(path, key string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s in %s: %w", key, path, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New(key + " not in " + path)
}
