package natsx

import (
	"sync"
	"time"
)

// parked are the messages this process NAKed on purpose to take them
// again later (a handler's RetryLater: an undo waiting for Entra, a
// timer, Graph's Retry-After), by consumer and stream sequence, with when
// they are due back. They are ack-pending on the server, yet nothing is
// behind: readiness counts them as handled (Parked). One that came back
// to another replica is forgotten a minute after it was due.
var parked = struct {
	mu sync.Mutex
	m  map[string]map[uint64]time.Time
}{m: map[string]map[uint64]time.Time{}}

// parkedGrace: how long after its due time a parked message still counts.
const parkedGrace = time.Minute

func park(consumer string, seq uint64, after time.Duration) {
	parked.mu.Lock()
	defer parked.mu.Unlock()
	if parked.m[consumer] == nil {
		parked.m[consumer] = map[uint64]time.Time{}
	}
	parked.m[consumer][seq] = time.Now().Add(after)
}

func unpark(consumer string, seq uint64) {
	parked.mu.Lock()
	defer parked.mu.Unlock()
	delete(parked.m[consumer], seq)
}

// Parked is how many messages of consumer this process holds parked.
func Parked(consumer string) int {
	parked.mu.Lock()
	defer parked.mu.Unlock()
	cutoff := time.Now().Add(-parkedGrace)
	for seq, due := range parked.m[consumer] {
		if due.Before(cutoff) {
			delete(parked.m[consumer], seq)
		}
	}
	return len(parked.m[consumer])
}
