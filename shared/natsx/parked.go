package natsx

import (
	"sync"
	"time"
)

// Parking holds the messages a process NAKed on purpose to take them again
// later (a handler's RetryLater: an undo waiting for Entra, a timer,
// Graph's Retry-After), by consumer and stream sequence, with when they
// are due back. They are ack-pending on the server, yet nothing is behind:
// readiness counts them as handled (Count). One that came back to another
// replica is forgotten a minute after it was due. A process has one,
// shared by its consumers and its readiness; nil tracks nothing.
type Parking struct {
	mu sync.Mutex
	m  map[string]map[uint64]time.Time
}

// NewParking returns an empty Parking.
func NewParking() *Parking { return &Parking{m: map[string]map[uint64]time.Time{}} }

// parkedGrace: how long after its due time a parked message still counts.
const parkedGrace = time.Minute

func (p *Parking) park(consumer string, seq uint64, after time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[consumer] == nil {
		p.m[consumer] = map[uint64]time.Time{}
	}
	p.m[consumer][seq] = time.Now().Add(after)
}

func (p *Parking) unpark(consumer string, seq uint64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m[consumer], seq)
}

// Count is how many messages of consumer this process holds parked.
func (p *Parking) Count(consumer string) int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cutoff := time.Now().Add(-parkedGrace)
	for seq, due := range p.m[consumer] {
		if due.Before(cutoff) {
			delete(p.m[consumer], seq)
		}
	}
	return len(p.m[consumer])
}
