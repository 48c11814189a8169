package actuator

import (
	"context"
	"fmt"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
	"github.com/pwsync/pwsync/shared/userstate"
)

// resolve finds the cloud account of an AD user: by onPremisesImmutableId
// (base64 of the objectGUID), then by userPrincipalName when allowed; the
// result is cached in KV. It always returns fresh state from Graph.
func (s *Service) resolve(ctx context.Context, ref events.UserRef) (*graph.User, error) {
	if ref.CloudID != "" { // joined by the evaluator from delta query
		var u *graph.User
		err := s.retry(ctx, "get_user", func(ctx context.Context) error {
			var err error
			u, err = s.graph.GetUser(ctx, ref.CloudID)
			return err
		})
		if graph.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s was deleted", ErrNoCloudAccount, ref.CloudID)
		}
		return u, err
	}
	rec, joined, err := s.identity.Join(ctx, ref.ObjectGUID)
	if err != nil {
		return nil, err
	}
	if joined {
		var u *graph.User
		err := s.retry(ctx, "get_user", func(ctx context.Context) error {
			var err error
			u, err = s.graph.GetUser(ctx, rec.CloudID)
			return err
		})
		switch {
		case err == nil:
			return u, nil
		case !graph.IsNotFound(err):
			return nil, err
		}
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
