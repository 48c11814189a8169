package actuator

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/cloudjoin"
	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// lookup is the user an action writes to. A require-change of a user the
// cloud join knows takes the join's record as it is: its ID and its kind
// decide the writes, and nothing is read before them (local is true).
// Everything else reads the user from Graph (resolve).
func (s *Service) lookup(ctx context.Context, a events.Action) (u *graph.User, local bool, err error) {
	if a.Kind == events.ActionRequireChange {
		if e, ok := s.joined(a.User); ok {
			return e.User(), true, nil
		}
	}
	u, err = s.resolve(ctx, a.User, "")
	return u, false, err
}

// joined is the cloud join's record of an AD user: by the cloud ID the
// evaluator joined, by onPremisesImmutableId, then by userPrincipalName
// when allowed (never an account anchored to another AD object).
func (s *Service) joined(ref events.UserRef) (cloudjoin.Entry, bool) {
	if s.join == nil {
		return cloudjoin.Entry{}, false
	}
	if ref.CloudID != "" {
		if e, ok := s.join.ByID(ref.CloudID); ok {
			return e, true
		}
	}
	if e, ok := s.join.ByImmutableID(ref.ImmutableID); ok {
		return e, true
	}
	if s.set.Identity.UPNFallback {
		if e, ok := s.join.ByUPN(s.cloudUPN(ref.UPN)); ok && (e.ImmutableID == "" || ref.ImmutableID == "" || e.ImmutableID == ref.ImmutableID) {
			return e, true
		}
	}
	return cloudjoin.Entry{}, false
}

// observe keeps the cloud join current with a read of the user.
func (s *Service) observe(u graph.User) {
	if s.join != nil {
		s.join.Observe(u)
	}
}

// unresolved ends an action whose user could not be resolved.
func (x *execution) unresolved(ctx context.Context, err error) error {
	if errors.Is(err, ErrNoCloudAccount) || errors.Is(err, natsx.ErrPermanent) {
		_ = x.finish(ctx, events.OutcomeDeadLetter, err.Error(), nil)
		return natsx.Permanent(err)
	}
	return err
}

// rememberJoin records in the identity bucket the join an action used from
// the cloud join, for `pwsync user` (after the writes: off the hot path).
func (s *Service) rememberJoin(ctx context.Context, ref events.UserRef, u *graph.User) {
	if ref.ObjectGUID == "" {
		return
	}
	if rec, ok, err := s.identity.Join(ctx, ref.ObjectGUID); err != nil || ok && rec.CloudID == u.ID {
		return
	}
	via := userstate.JoinedViaImmutableID
	if u.ImmutableID == "" || u.ImmutableID != ref.ImmutableID {
		via = userstate.JoinedViaUPN
	}
	if err := s.identity.PutJoin(ctx, ref.ObjectGUID, userstate.Join{CloudID: u.ID, UPN: u.UPN, Via: via}); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("recording the join failed")
	}
}

// resolve finds the cloud account of an AD user and reads it from Graph:
// by the cloud join's ID, the evaluator's, the identity bucket's cached
// join, then by onPremisesImmutableId (base64 of the objectGUID), then by
// userPrincipalName when allowed; the result is cached in KV and in the
// cloud join. gone is an ID just found deleted (skipped). It always
// returns fresh state from Graph.
func (s *Service) resolve(ctx context.Context, ref events.UserRef, gone string) (*graph.User, error) {
	byID := func(id string) (*graph.User, error) {
		var u *graph.User
		err := s.retry(ctx, "get_user", func(ctx context.Context) error {
			var err error
			u, err = s.graph.GetUser(ctx, id)
			return err
		})
		switch {
		case err == nil:
			s.observe(*u)
		case graph.IsNotFound(err) && s.join != nil:
			s.join.Remove(id)
		}
		return u, err
	}
	if e, ok := s.joined(ref); ok && e.ID != gone {
		u, err := byID(e.ID)
		if !graph.IsNotFound(err) {
			return u, err
		}
	}
	if ref.CloudID != "" && ref.CloudID != gone { // joined by the evaluator from delta query
		u, err := byID(ref.CloudID)
		if !graph.IsNotFound(err) {
			return u, err
		}
		// Deleted, or recreated under a new ID: look the AD user up again.
	}
	rec, joined, err := s.identity.Join(ctx, ref.ObjectGUID)
	if err != nil {
		return nil, err
	}
	if joined && rec.CloudID != gone {
		u, err := byID(rec.CloudID)
		switch {
		case err == nil:
			return u, nil
		case !graph.IsNotFound(err):
			return nil, err
		}
	}
	if joined {
		_ = s.identity.DeleteJoin(ctx, ref.ObjectGUID) // the cloud account is gone: join again
	}

	var found *graph.User
	via := userstate.JoinedViaImmutableID
	if ref.ImmutableID != "" {
		if err := s.retry(ctx, "find_by_immutable_id", func(ctx context.Context) error {
			var err error
			found, err = s.graph.FindByImmutableID(ctx, ref.ImmutableID)
			return err
		}); err != nil {
			return nil, err
		}
	}
	if found == nil && s.set.Identity.UPNFallback && ref.UPN != "" {
		via = userstate.JoinedViaUPN
		upn := s.cloudUPN(ref.UPN)
		err := s.retry(ctx, "get_user_by_upn", func(ctx context.Context) error {
			var err error
			found, err = s.graph.GetUser(ctx, upn)
			return err
		})
		switch {
		case graph.IsNotFound(err):
			found = nil
		case err != nil:
			return nil, err
		case found.ImmutableID != "" && ref.ImmutableID != "" && found.ImmutableID != ref.ImmutableID:
			// Same UPN, but joined to another AD object: never guess.
			return nil, natsx.Permanent(fmt.Errorf("%w: %s matches a cloud account anchored to another AD object", ErrNoCloudAccount, upn))
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w for %s (immutable id %s)", ErrNoCloudAccount, ref.UPN, ref.ImmutableID)
	}
	// The look-up may not carry passwordProfile: read the full state.
	u := found
	if err := s.retry(ctx, "get_user", func(ctx context.Context) error {
		var err error
		u, err = s.graph.GetUser(ctx, found.ID)
		return err
	}); err != nil {
		return nil, err
	}
	if err := s.identity.PutJoin(ctx, ref.ObjectGUID, userstate.Join{CloudID: u.ID, UPN: u.UPN, Via: via}); err != nil {
		return nil, err
	}
	s.observe(*u)
	return u, nil
}

func (s *Service) cloudUPN(upn string) string {
	for i := len(upn) - 1; i >= 0; i-- {
		if upn[i] == '@' {
			if to, ok := s.set.Identity.UPNSuffixMap[upn[i+1:]]; ok {
				return upn[:i+1] + to
			}
			break
		}
	}
	return upn
}
