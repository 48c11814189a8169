package msgraph_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

func TestTenantPolicyAgainstSimulator(t *testing.T) {
	// the report's read permissions, on top of what the services need
	roles := append(slices.Clone(graphsim.DefaultRoles), "Domain.Read.All", "OnPremDirectorySynchronization.Read.All")
	s := startSim(t, graphsim.Options{Roles: roles})
	s.PutDomain(graphsim.Domain{ID: "example.com", AuthenticationType: "Managed", IsVerified: true,
		PasswordValidityPeriodInDays: 90, PasswordNotificationWindowInDays: 14})
	if err := s.SetSyncFeature(graph.FeatureForceChangeOnLogon, true); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := c.Domains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, d := range ds {
		if d.ID == "example.com" {
			found = true
			if d.PasswordValidityPeriodInDays == nil || *d.PasswordValidityPeriodInDays != 90 || *d.PasswordNotificationWindowInDays != 14 || !d.IsVerified {
				t.Fatalf("domain = %+v", d)
			}
		}
	}
	if !found {
		t.Fatalf("domains = %+v", ds)
	}
	sync, err := c.OnPremisesSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sync == nil || !sync.Features[graph.FeatureForceChangeOnLogon] || sync.Features[graph.FeatureCloudPasswordPolicyForSynced] || !sync.Features[graph.FeaturePasswordSync] {
		t.Fatalf("sync = %+v", sync)
	}
}
