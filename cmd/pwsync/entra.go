package main

import (
	"context"
	"fmt"

	"github.com/pwsync/pwsync/services/evaluator/policy"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
)

// newGraphClient builds the Graph client from the graph: section.
func newGraphClient(g config.Graph) (*msgraph.Client, error) {
	client, err := msgraph.New(msgraph.Config{TenantID: g.TenantID, ClientID: g.ClientID,
		ClientSecret: g.ClientSecret.Value(), CertificateFile: g.CertificateFile,
		CertificatePassword: g.CertificatePassword.Value(), AuthorityHost: g.AuthorityHost,
		GraphBaseURL: g.BaseURL, CAFile: g.CAFile, Timeout: g.Timeout})
	if err != nil {
		return nil, fmt.Errorf("graph client: %w", err)
	}
	return client, nil
}

// entraMembership reads which of the groups have the cloud user among
// their transitive members (what the evaluator's scope uses).
func entraMembership(ctx context.Context, dir graph.Directory, groups []string, cloudID string) (policy.EntraMembership, error) {
	m := policy.EntraMembership{}
	for _, g := range groups {
		users, err := dir.TransitiveGroupMembers(ctx, g)
		if err != nil {
			return nil, fmt.Errorf("reading members of Entra group %s: %w", g, err)
		}
		for _, u := range users {
			if u.ID == cloudID {
				m[g] = true
				break
			}
		}
	}
	return m, nil
}
