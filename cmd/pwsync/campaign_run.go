package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/budget"
	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/mustchange"
	"github.com/pwsync/pwsync/shared/natsx"
)

// campaignLDAP hands out one LDAP pool per configured domain.
type campaignLDAP struct {
	mu    sync.Mutex
	cfg   config.Config
	pools map[string]*campaign.LDAP
}

func (c *campaignLDAP) domain(name string) (config.Domain, error) {
	ds := c.cfg.AD.Domains
	if len(ds) == 0 {
		return config.Domain{}, errors.New("no AD domain configured (ad.domains)")
	}
	if name == "" {
		return ds[0], nil
	}
	for _, d := range ds {
		if strings.EqualFold(d.Name, name) {
			return d, nil
		}
	}
	return config.Domain{}, fmt.Errorf("unknown domain %q (ad.domains)", name)
}

func (c *campaignLDAP) pool(name string) (*campaign.LDAP, error) {
	d, err := c.domain(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pools[d.Name]; ok {
		return p, nil
	}
	p, err := campaign.NewLDAP(campaign.LDAPConfig{URLs: domainDCs(context.Background(), d), StartTLS: d.StartTLS, CAFile: d.CAFile,
		InsecureSkipVerify: d.InsecureSkipVerify, BindDN: d.BindDN, BindPassword: d.BindPassword.Value(),
		Kerberos: ldapKerberos(d.Kerberos), Conns: c.cfg.Campaigns.ADConcurrency})
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", d.Name, err)
	}
	c.pools[d.Name] = p
	return p, nil
}

func (c *campaignLDAP) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pools {
		p.Close()
	}
}

// campaignParts builds the campaign service (admin API routes) and, for the
// actuator target, the runner, which runs under the campaign lease.
// budgetOf is what sizes the process's one write budget: actuator.write_budget
// per write_window (Graph's app+tenant limit); campaign work uses at most
// campaigns.write_share of it, and no more than campaigns.write_budget per
// campaigns.write_window when that is lower. With actuator.write_budget 0
// (unpaced) and campaigns on, the campaigns' budget sizes it, as before.
func budgetOf(cfg config.Config) (config.Actuator, float64) {
	set, cc := cfg.Actuator, cfg.Campaigns
	share := cc.WriteShare
	if !cfg.Campaigns.Enabled || cc.WriteBudget <= 0 || cc.WriteWindow <= 0 {
		return set, share
	}
	if set.WriteBudget <= 0 || set.WriteWindow <= 0 {
		set.WriteBudget, set.WriteWindow = cc.WriteBudget, cc.WriteWindow
		return set, share
	}
	rate := float64(cc.WriteBudget) / cc.WriteWindow.Seconds() / (float64(set.WriteBudget) / set.WriteWindow.Seconds())
	return set, min(share, rate)
}

func campaignParts(ctx context.Context, cfg config.Config, conn *natsx.Conn, client *msgraph.Client, writes *budget.Scheduler,
	holder string, log zerolog.Logger) (*campaign.Service, service, func(), error) {
	ad := &campaignLDAP{cfg: cfg, pools: map[string]*campaign.LDAP{}}
	cc := cfg.Campaigns
	resolver := func(domain string) (*campaign.Resolver, error) {
		s := cfg.Evaluator.Scope
		r := &campaign.Resolver{Cloud: client, Batch: client, Scope: campaign.Scope{IncludeOUs: s.IncludeOUs,
			BreakGlassUPNs: s.BreakGlassUPNs, BreakGlassGroups: s.BreakGlassGroups, IncludeDisabled: s.IncludeDisabled}}
		if len(cfg.AD.Domains) == 0 {
			return r, nil // cloud-only: AD selectors are refused
		}
		d, err := ad.domain(domain)
		if err != nil {
			return nil, err
		}
		p, err := ad.pool(d.Name)
		if err != nil {
			return nil, err
		}
		r.AD = p
		r.Scope.Domain, r.Scope.BaseDN, r.Scope.UserFilter = d.Name, d.BaseDN, d.UserFilter
		return r, nil
	}
	deps := campaign.Deps{JS: conn.JS, Resolver: resolver, Limits: campaign.Limits{ApprovalThreshold: cc.ApprovalThreshold, HardCap: cc.HardCap},
		Verify: mustchange.FromConfig(cfg.Actuator), // the actuator's read-back and fallback (actuator.cloud_managed)
		Holder: holder, Log: log.With().Str("service", "campaign").Logger()}
	if writes != nil { // the runner goes with the actuator
		deps.Runner = &campaign.RunnerDeps{Batch: client,
			Pacer: writes.Lane(budget.Campaign), // the actuator's scheduler: live resets go first
			Risk:  client,                       // confirm_compromised: Identity Protection, paced on its own
			AD: func(domain string) (campaign.ADWriter, error) {
				return ad.pool(domain)
			},
			// evaluator.scope's break-glass accounts, read again while a campaign runs
			BreakGlass: func(ctx context.Context, domain string) (*campaign.BreakGlass, error) {
				r, err := resolver(domain)
				if err != nil {
					return nil, err
				}
				return r.BreakGlass(ctx)
			},
			Cfg: campaign.RunConfig{Concurrency: cc.Concurrency, ADConcurrency: cc.ADConcurrency, MaxAttempts: cc.MaxAttempts,
				WithMFA: cc.WithMFA, UncertainWait: cc.UncertainWait, ADOutageAlert: cc.ADOutageAlert,
				GraphBaseURL: cfg.Graph.BaseURL}}
	}
	svc, err := campaign.New(ctx, deps)
	if err != nil {
		ad.close()
		return nil, nil, nil, err
	}
	if deps.Runner == nil { // no actuator here: no runner either
		return svc, nil, ad.close, nil
	}
	return svc, svc, ad.close, nil
}
