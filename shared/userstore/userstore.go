// Package userstore reads and writes the users and identity buckets through
// shared/userstate's keys and records: the one place that knows their
// layout. The evaluator owns the users bucket's writes (with its optimistic
// concurrency); everyone else reads here.
package userstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// Store is the two buckets.
type Store struct {
	users, identity jetstream.KeyValue
}

// Open opens both buckets (natsx.Topology creates them).
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	users, err := natsx.Bucket(ctx, js, natsx.BucketUsers)
	if err != nil {
		return nil, err
	}
	identity, err := natsx.Bucket(ctx, js, natsx.BucketIdentity)
	if err != nil {
		return nil, err
	}
	return &Store{users: users, identity: identity}, nil
}

// GUIDByUPN is the AD user with this UPN; "" when pwsync never indexed it.
func (s *Store) GUIDByUPN(ctx context.Context, upn string) (string, error) {
	key := userstate.UPNKey(upn)
	if key == "" {
		return "", nil
	}
	e, err := s.identity.Get(ctx, key)
	switch {
	case natsx.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("reading the UPN index of %s: %w", upn, err)
	}
	return string(e.Value()), nil
}

// State is a user's state; found is false when the evaluator has none.
func (s *Store) State(ctx context.Context, guid string) (st userstate.State, found bool, err error) {
	e, err := s.users.Get(ctx, userstate.UserKey(guid))
	switch {
	case natsx.IsNotFound(err):
		return st, false, nil
	case err != nil:
		return st, false, fmt.Errorf("reading state of %s: %w", guid, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, false, fmt.Errorf("decoding state of %s: %w", guid, err)
	}
	return st, true, nil
}

// EachState calls f with every decodable state (a key deleted meanwhile or
// an undecodable record is passed over), until f returns false.
func (s *Store) EachState(ctx context.Context, f func(userstate.State) bool) error {
	lister, err := s.users.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing users: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		e, err := s.users.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var st userstate.State
		if json.Unmarshal(e.Value(), &st) != nil {
			continue
		}
		if !f(st) {
			return nil
		}
	}
	return nil
}

// Join is the actuator's join of an AD user; ok is false when there is none.
func (s *Store) Join(ctx context.Context, guid string) (j userstate.Join, ok bool, err error) {
	e, err := s.identity.Get(ctx, userstate.JoinKey(guid))
	switch {
	case natsx.IsNotFound(err):
		return j, false, nil
	case err != nil:
		return j, false, fmt.Errorf("reading the join of %s: %w", guid, err)
	}
	j, ok = userstate.DecodeJoin(e.Value())
	return j, ok, nil
}

// JoinedCloudID is the cloud account the actuator joined to the AD user,
// "" for none. A value that is not a Join is taken as a bare cloud ID.
func (s *Store) JoinedCloudID(ctx context.Context, guid string) (string, error) {
	e, err := s.identity.Get(ctx, userstate.JoinKey(guid))
	switch {
	case natsx.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("reading the join of %s: %w", guid, err)
	}
	if j, ok := userstate.DecodeJoin(e.Value()); ok {
		return j.CloudID, nil
	}
	return string(e.Value()), nil
}

// PutJoin caches the join the actuator resolved.
func (s *Store) PutJoin(ctx context.Context, guid string, j userstate.Join) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encoding the join of %s: %w", guid, err)
	}
	if _, err := s.identity.Put(ctx, userstate.JoinKey(guid), data); err != nil {
		return fmt.Errorf("caching the join of %s: %w", guid, err)
	}
	return nil
}

// DeleteJoin forgets a join whose cloud account is gone.
func (s *Store) DeleteJoin(ctx context.Context, guid string) error {
	if err := s.identity.Delete(ctx, userstate.JoinKey(guid)); err != nil && !natsx.IsNotFound(err) {
		return fmt.Errorf("deleting the join of %s: %w", guid, err)
	}
	return nil
}
