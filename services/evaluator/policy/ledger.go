package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/natsx"
)

// LedgerBucket is the notifier's ledger (named in natsx; the notifier not
// imported, to keep it out of this package's users).
const LedgerBucket = natsx.BucketNotices

// KVLedger looks notices up in the notifier's ledger, read only: a missing
// bucket (the notifier never ran) is reported by each lookup, not created.
// It is the one I/O edge of this package; Explain stays pure given it.
func KVLedger(ctx context.Context, js jetstream.JetStream) LedgerLookup {
	var kv jetstream.KeyValue
	var openErr error
	return func(key string) (LedgerEntry, bool, error) {
		if kv == nil && openErr == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			kv, openErr = js.KeyValue(cctx, LedgerBucket)
			cancel()
			if errors.Is(openErr, jetstream.ErrBucketNotFound) {
				openErr = fmt.Errorf("no bucket %s: the notifier has not run", LedgerBucket)
			}
		}
		if openErr != nil {
			return LedgerEntry{}, false, openErr
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		e, err := kv.Get(cctx, key)
		switch {
		case natsx.IsNotFound(err):
			return LedgerEntry{}, false, nil
		case err != nil:
			return LedgerEntry{}, false, fmt.Errorf("reading %s: %w", key, err)
		}
		var le LedgerEntry
		if err := json.Unmarshal(e.Value(), &le); err != nil {
			return LedgerEntry{}, false, fmt.Errorf("decoding %s: %w", key, err)
		}
		return le, true, nil
	}
}
