package logx

import (
	"bytes"
	"sync"
)

// Buffer is a log sink that is safe for concurrent writers; tests read what
// was logged (e.g. to check that a secret never was).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
