package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Storage is JetStream's file storage use against its limit.
type Storage struct {
	Used  int64 // bytes stored by this account
	Limit int64 // the account's limit, else the server's (embedded); 0 = unknown
}

// Full reports whether (nearly) no room is left: within 1% (at least 64 KiB)
// of the limit, publishes start failing with "insufficient resources".
func (s Storage) Full() bool {
	return s.Limit > 0 && s.Limit-s.Used < max(s.Limit/100, 64<<10)
}

func (s Storage) String() string {
	return fmt.Sprintf("%d of %d bytes used", s.Used, s.Limit)
}

// StorageUse reads the account's storage use. serverLimit is the embedded
// server's limit (Embedded.MaxStore), used when the account has none.
func StorageUse(ctx context.Context, js jetstream.JetStream, serverLimit int64) (Storage, error) {
	ai, err := js.AccountInfo(ctx)
	if err != nil {
		return Storage{}, fmt.Errorf("reading jetstream account info: %w", err)
	}
	st := Storage{Used: int64(ai.Store), Limit: ai.Limits.MaxStore}
	if st.Limit <= 0 {
		st.Limit = serverLimit
	}
	return st, nil
}
