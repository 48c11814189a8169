package main

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator/adwrite"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/natsx"
)

// riskServices are the risk loop's parts of this process's targets (issue
// 17): ingest polls Identity Protection, the actuator target runs the AD
// writer. The evaluator's rule is in the policy (riskPolicyOf).
func riskServices(ctx context.Context, cfg config.Config, t config.Targets, conn *natsx.Conn, client *msgraph.Client,
	instance string, log zerolog.Logger) ([]service, error) {
	if !cfg.Risk.Enabled {
		return nil, nil
	}
	var out []service
	if t.Ingest {
		if client == nil {
			return nil, fmt.Errorf("risk.enabled needs graph:")
		}
		p, err := graphwatch.NewRiskPoller(ctx, graphwatch.RiskConfig{Interval: cfg.Risk.PollInterval, Lookback: cfg.Risk.Lookback,
			EventTypes: cfg.Risk.DetectionTypes, Holder: instance}, client, client, conn.JS, log.With().Str("service", "ingest").Logger())
		if err != nil {
			return nil, fmt.Errorf("starting the risk poller: %w", err)
		}
		out = append(out, p)
	}
	if t.Actuator {
		var doms []adwrite.Domain
		for _, d := range cfg.AD.Domains {
			doms = append(doms, adwrite.Domain{Name: d.Name, URLs: domainDCs(ctx, d), StartTLS: d.StartTLS, CAFile: d.CAFile,
				InsecureSkipVerify: d.InsecureSkipVerify, BindDN: d.BindDN, BindPassword: d.BindPassword.Value(),
				Kerberos: ldapKerberos(d.Kerberos)})
		}
		w, err := adwrite.New(ctx, adwrite.Deps{JS: conn.JS, Domains: doms, Risk: client,
			Log: log.With().Str("service", "actuator").Logger()})
		if err != nil {
			return nil, fmt.Errorf("starting the AD writer: %w", err)
		}
		out = append(out, w)
	}
	return out, nil
}

func riskPolicyOf(cfg config.Config) rules.RiskPolicy {
	r := cfg.Risk
	return rules.RiskPolicy{Enabled: r.Enabled, Levels: r.Levels, States: r.States, DetectionTypes: r.DetectionTypes,
		DryRun: r.DryRun, Notify: r.Notify, DismissAfterChange: r.DismissAfterChange,
		StillAtRiskAfter: r.StillAtRiskAfter}
}
