package evaluator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/shared/graph"
)

// MemberLister lists an Entra group's transitive user members (implemented
// by *msgraph.Client as graph.Directory).
type MemberLister interface {
	TransitiveGroupMembers(ctx context.Context, groupID string) ([]graph.User, error)
}

// EntraGroups keeps the membership of the Entra groups that bring users
// into scope, refreshed on an interval. Until the first refresh succeeds
// nobody is in scope through them: scope by Entra group may only include,
// and including too few is the safe mistake.
type EntraGroups struct {
	lister  MemberLister
	groups  []string
	refresh time.Duration
	log     zerolog.Logger

	mu      sync.RWMutex
	members map[string]bool // cloud object IDs
	loaded  time.Time
}

// NewEntraGroups returns the membership cache of groups (object IDs).
func NewEntraGroups(l MemberLister, groups []string, refresh time.Duration, log zerolog.Logger) *EntraGroups {
	return &EntraGroups{lister: l, groups: groups, refresh: refresh, members: map[string]bool{},
		log: log.With().Str("component", "entra_groups").Logger()}
}

// Members returns the current membership; callers must not modify it.
func (g *EntraGroups) Members() map[string]bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.members
}

// Refresh re-reads every group. A group that fails keeps the whole previous
// membership: a partial view would drop users out of scope.
func (g *EntraGroups) Refresh(ctx context.Context) error {
	next := map[string]bool{}
	for _, id := range g.groups {
		users, err := g.lister.TransitiveGroupMembers(ctx, id)
		if err != nil {
			return fmt.Errorf("reading members of Entra group %s: %w", id, err)
		}
		for _, u := range users {
			next[u.ID] = true
		}
	}
	g.mu.Lock()
	g.members, g.loaded = next, time.Now()
	g.mu.Unlock()
	g.log.Info().Int("members", len(next)).Int("groups", len(g.groups)).Msg("Entra group membership refreshed")
	return nil
}

// Run refreshes at once and then on the interval until ctx ends.
func (g *EntraGroups) Run(ctx context.Context) {
	t := time.NewTicker(g.refresh)
	defer t.Stop()
	for {
		if err := g.Refresh(ctx); err != nil && ctx.Err() == nil {
			g.log.Error().Err(err).Msg("Entra group refresh failed; keeping the previous membership")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
