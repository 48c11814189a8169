package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pwsync/pwsync/services/actuator"
	"github.com/pwsync/pwsync/services/actuator/budget"
	"github.com/pwsync/pwsync/services/actuator/cloudjoin"
	"github.com/pwsync/pwsync/services/actuator/notifier"
	"github.com/pwsync/pwsync/services/auditship"
	"github.com/pwsync/pwsync/services/campaign"
	"github.com/pwsync/pwsync/services/evaluator"
	"github.com/pwsync/pwsync/services/evaluator/rules"
	"github.com/pwsync/pwsync/services/evaluator/scheduler"
	"github.com/pwsync/pwsync/services/ingest"
	"github.com/pwsync/pwsync/services/ingest/adwatch"
	"github.com/pwsync/pwsync/services/ingest/graphwatch"
	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/shared/dclocator"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/graph/msgraph"
	"github.com/pwsync/pwsync/shared/health"
	"github.com/pwsync/pwsync/shared/ldapconn"
	"github.com/pwsync/pwsync/shared/metrics"
	"github.com/pwsync/pwsync/shared/natsx"
)

// service is what each target runs.
type service interface {
	Run(ctx context.Context) error
}

// run starts NATS (embedded unless nats.url is set), the selected targets and
// the ops listener, and runs until SIGTERM/SIGINT or ctx ends. Shutdown: stop
// intake, let in-flight messages finish, drain NATS, stop the embedded server.
func run(ctx context.Context, cfg config.Config, t config.Targets, log zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	ldapconn.SetLogger(log) // Kerberos logins and renewals
	if off := os.Getenv("PWSYNC_CLOCK_OFFSET"); off != "" {
		log.Warn().Str("offset", off).Msg("PWSYNC_CLOCK_OFFSET moves the evaluator's clock: for tests only")
	}
	var emb *natsx.Embedded
	if cfg.NATS.URL == "" {
		var err error
		emb, err = natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: cfg.NATS.Embedded.DataDir, Listen: cfg.NATS.Embedded.Listen,
			MaxStore: int64(cfg.NATS.Embedded.MaxStore), Log: &log})
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		log.Info().Str("data_dir", cfg.NATS.Embedded.DataDir).Str("listen", emb.ClientURL()).Msg("embedded nats started")
	}
	conn, err := natsx.Connect(natsx.ConnectConfig{URL: cfg.NATS.URL, Embedded: emb, Name: "pwsync",
		CredsFile: cfg.NATS.CredsFile, NKeyFile: cfg.NATS.NKeyFile, CAFile: cfg.NATS.CAFile}, log)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		conn.Drain(dctx)
	}()
	topo := natsx.DefaultOptions()
	topo.Replicas = cfg.NATS.Replicas
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := natsx.NewTopology(topo).Ensure(setupCtx, conn.JS); err != nil {
		return err
	}

	var client *msgraph.Client
	if cfg.NeedsGraph(t) {
		client, err = newGraphClient(cfg.Graph)
		if err != nil {
			return err
		}
		defer client.Close()
	}

	// This replica's name in every lease: stable across restarts, so that a
	// restarted replica takes its own leases back at once.
	instance := cfg.InstanceName(t)
	var services []service
	var targets []health.Target
	// what the evaluator and actuator park on purpose, for their readiness
	parking := natsx.NewParking()
	if t.Ingest {
		var domains []adwatch.Config
		for _, d := range cfg.AD.Domains {
			dc := domainConfig(d)
			// the rules need these groups' nested membership
			dc.Groups = append(slices.Clone(cfg.Evaluator.Scope.IncludeGroups), cfg.Evaluator.Scope.BreakGlassGroups...)
			domains = append(domains, dc)
		}
		deps := ingest.Deps{JS: conn.JS, NC: conn.NC, Domains: domains, Holder: instance,
			Log: log.With().Str("service", "ingest").Logger()}
		if w := cfg.Webhook; w.Enabled {
			deps.Graph = &ingest.GraphDeps{Tracker: client, Listen: w.Listen, PublicURL: w.PublicURL,
				TLSCert: w.TLSCert, TLSKey: w.TLSKey, MaxBody: w.MaxBody, DedupWindow: w.DedupWindow,
				Watch: graphwatch.Config{DeltaInterval: w.DeltaInterval}}
		}
		in, err := ingest.New(setupCtx, deps)
		if err != nil {
			return fmt.Errorf("starting ingest: %w", err)
		}
		services, targets = append(services, in), append(targets, health.Target{Name: "ingest", Ready: in.Ready, Detail: in.DCs})
	}
	if t.Evaluator {
		evDeps := evaluator.Deps{JS: conn.JS, Policy: policyOf(cfg), Now: clock,
			Log:      log.With().Str("service", "evaluator").Logger(),
			Backfill: evaluator.GateConfig{Threshold: cfg.Evaluator.ForcedChange.BackfillThreshold},
			Reevaluate: evaluator.ReevaluateConfig{Enabled: cfg.Evaluator.Reevaluate.Enabled,
				Rate: cfg.Evaluator.Reevaluate.Rate}, Holder: instance, RiskHourlyCap: cfg.Risk.HourlyCap, Parking: parking}
		if groups := cfg.Evaluator.Scope.IncludeEntraGroups; len(groups) > 0 {
			var dir graph.Directory = client // NeedsGraph made it for the evaluator
			evDeps.Groups = evaluator.NewEntraGroups(dir, groups, cfg.Evaluator.Scope.EntraRefresh, log)
		}
		ev, err := evaluator.New(setupCtx, evDeps)
		if err != nil {
			return fmt.Errorf("starting evaluator: %w", err)
		}
		services = append(services, ev)
		if cfg.Evaluator.Expiry.Enabled {
			sc, err := scheduler.New(setupCtx, scheduler.Deps{JS: conn.JS, Policy: evDeps.Policy, Now: clock,
				Sweep: cfg.Evaluator.Expiry.SweepInterval, Holder: instance, Log: log.With().Str("service", "evaluator").Logger()})
			if err != nil {
				return fmt.Errorf("starting expiry scheduler: %w", err)
			}
			services = append(services, sc)
		}
	}
	// One write budget per process: the actuator's steps and the campaign
	// runner's $batch lane take their slots from the same scheduler.
	var writes *budget.Scheduler
	if t.Actuator {
		writes = actuator.NewBudget(budgetOf(cfg))
		// The AD <-> Entra join in memory: with the Graph side on, graphwatch
		// follows delta (wherever its lease is) and its events keep the
		// join; with it off, the join polls delta itself. Ready once loaded:
		// a reset is written without a read only then.
		join := cloudjoin.Keeper{Index: cloudjoin.New(), Sync: cloudjoin.Sync{Source: client, NC: conn.NC,
			Log: log.With().Str("service", "actuator").Logger()}}
		if !cfg.Webhook.Enabled {
			join.Sync.Poll = cloudjoin.DefaultPoll
		}
		services, targets = append(services, join), append(targets, health.Target{Name: "cloud_join", Ready: join.Index.Loaded})
		act, err := actuator.New(setupCtx, actuator.Deps{JS: conn.JS, Graph: client, Settings: cfg.Actuator,
			Log:      log.With().Str("service", "actuator").Logger(),
			Budget:   writes,
			Join:     join.Index,
			Notifier: cfg.Notify.Active(),
			Parking:  parking})
		if err != nil {
			return fmt.Errorf("starting actuator: %w", err)
		}
		services = append(services, act)
		if cfg.Notify.Active() {
			// Templates are checked here: a template naming an unknown field stops the start.
			nt, err := notifier.New(setupCtx, notifier.Deps{JS: conn.JS, Graph: client, Messenger: client,
				Settings: cfg.Notify, Replicas: cfg.NATS.Replicas, Holder: instance, Now: clock,
				Log: log.With().Str("service", "notifier").Logger()})
			if err != nil {
				return fmt.Errorf("starting notifier: %w", err)
			}
			services = append(services, nt)
		}
	}

	risk, err := riskServices(setupCtx, cfg, t, conn, client, instance, log)
	if err != nil {
		return err
	}
	services = append(services, risk...)

	var campaigns *campaign.Service
	if cfg.Campaigns.Enabled && client != nil {
		svc, runner, closeAD, err := campaignParts(setupCtx, cfg, conn, client, writes, instance, log)
		if err != nil {
			return fmt.Errorf("starting campaigns: %w", err)
		}
		defer closeAD()
		if runner != nil {
			services = append(services, runner)
		}
		campaigns = svc
	}
	if cfg.Admin.Enabled {
		adm, err := newAdminServer(cfg.Admin, conn, log.With().Str("service", "admin").Logger())
		if err != nil {
			return err
		}
		registerAdminRoutes(adm, conn, cfg, log)
		if campaigns != nil {
			campaign.Register(adm, campaigns)
		}
		services = append(services, adm)
	}

	if len(cfg.Audit.Sinks) > 0 {
		ship, err := auditShipper(setupCtx, cfg, conn, instance, log)
		if err != nil {
			return fmt.Errorf("starting audit shipping: %w", err)
		}
		services = append(services, ship)
	}

	storage := &storageHealth{js: conn.JS, log: log}
	if emb != nil {
		storage.limit, storage.emb = emb.MaxStore(), emb
	}
	services = append(services, storage)
	if t.Evaluator || t.Actuator {
		targets = append(targets, catchUpTarget(conn.JS, parking, t, targets, log))
	}
	ops, err := startOps(cfg.Ops, conn, targets, storage, log)
	if err != nil {
		return err
	}

	log.Info().Bool("ingest", t.Ingest).Bool("evaluator", t.Evaluator).Bool("actuator", t.Actuator).
		Bool("embedded_nats", emb != nil).Str("instance", instance).Str("version", version).Msg("pwsync running")
	errs := make(chan error, len(services))
	var wg sync.WaitGroup
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	if cfg.Ops.Metrics {
		sampler := metrics.Sampler{JS: conn.JS, LeasesBucket: natsx.BucketLeases, Interval: cfg.Ops.SampleInterval, Log: log}
		wg.Go(func() { sampler.Run(runCtx) })
	}
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(runCtx); err != nil {
				errs <- err
				cancelRun() // one target failing stops the process: a supervisor restarts it
			}
		}()
	}
	<-runCtx.Done()
	log.Info().Dur("timeout", cfg.ShutdownTimeout).Msg("shutting down: finishing in-flight work")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.ShutdownTimeout):
		log.Warn().Msg("shutdown timeout: in-flight work abandoned; it will be redelivered")
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = ops.Shutdown(sctx)
	scancel()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// auditShipper ships the audit trail to the SIEM sinks (any target: each
// sink runs under its own lease).
func auditShipper(ctx context.Context, cfg config.Config, conn *natsx.Conn, instance string, log zerolog.Logger) (*auditship.Service, error) {
	var entra *auditship.Entra
	if cfg.Audit.NeedsEntraCredential() {
		g := cfg.Graph
		cred, hc, err := msgraph.NewCredential(msgraph.Config{TenantID: g.TenantID, ClientID: g.ClientID,
			ClientSecret: g.ClientSecret.Value(), CertificateFile: g.CertificateFile,
			CertificatePassword: g.CertificatePassword.Value(), AuthorityHost: g.AuthorityHost,
			GraphBaseURL: g.BaseURL, CAFile: g.CAFile, Timeout: g.Timeout})
		if err != nil {
			return nil, fmt.Errorf("entra credential for the sentinel sink: %w", err)
		}
		entra = &auditship.Entra{Credential: cred, HTTP: hc}
	}
	targets, err := auditship.Targets(ctx, cfg.Audit.Sinks, entra, version)
	if err != nil {
		return nil, err
	}
	return auditship.New(ctx, auditship.Deps{JS: conn.JS, Pub: natsx.NewPublisher(conn.JS), Targets: targets,
		Holder: instance, Log: log.With().Str("service", "auditship").Logger()})
}

// startOps serves /healthz (the process is alive), /readyz (NATS connected,
// JetStream answering with room to store, streams present, each target ready; lease holders
// reported) and /metrics.
func startOps(o config.Ops, conn *natsx.Conn, targets []health.Target, storage *storageHealth, log zerolog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	checker := &health.Checker{NC: conn.NC, JS: conn.JS, LeasesBucket: natsx.BucketLeases, Targets: targets,
		StoreLimit: storage.limit, StoreError: storage.storeError,
		Streams: []string{natsx.StreamEvents, natsx.StreamActions, natsx.StreamAudit, natsx.StreamDLQ}}
	checker.Register(mux)
	if o.Metrics {
		mux.Handle("GET /metrics", metrics.Handler())
	}
	if o.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("ops.listen %s: %w", o.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("ops listener stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Bool("metrics", o.Metrics).Bool("pprof", o.Pprof).Msg("ops listener started")
	return srv, nil
}

// clock is the evaluator's and scheduler's time. PWSYNC_CLOCK_OFFSET (a Go
// duration) moves it, for end-to-end tests of expiry: AD will not take a
// past pwdLastSet, so the test moves pwsync's clock forward instead.
var clock = func() func() time.Time {
	off, err := time.ParseDuration(os.Getenv("PWSYNC_CLOCK_OFFSET"))
	if err != nil || off == 0 {
		return time.Now
	}
	return func() time.Time { return time.Now().Add(off) }
}()

func domainConfig(d config.Domain) adwatch.Config {
	return adwatch.Config{
		Domain: d.Name, URL: first(d.DCs()), URLs: d.DCs(), Locate: dcLocate(d), PreferredProbe: d.PreferredProbe,
		StartTLS: d.StartTLS, CAFile: d.CAFile, InsecureSkipVerify: d.InsecureSkipVerify,
		AllowPlain: d.AllowPlain, BindDN: d.BindDN, BindPassword: d.BindPassword.Value(), Kerberos: ldapKerberos(d.Kerberos), BaseDN: d.BaseDN,
		UserFilter: d.UserFilter, Mode: d.Mode, PollInterval: d.PollInterval, Notifications: *d.Notifications,
		PageSize: d.PageSize, Anchor: d.SourceAnchor,
	}
}

// first is the first of a list, or "".
func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// dcLocate lists a domain's DCs with DNS discovery (nil without it: the
// named DCs are the list).
func dcLocate(d config.Domain) func(context.Context) ([]string, error) {
	l, err := domainLocator(d)
	if err != nil || d.Discover == nil {
		return nil // the config was validated: without discovery, no error here
	}
	return l.Candidates
}

// domainDCs lists a domain's DCs now, discovery included; when DNS fails,
// the DCs named in the configuration.
func domainDCs(ctx context.Context, d config.Domain) []string {
	l, err := domainLocator(d)
	if err != nil {
		return d.DCs()
	}
	urls, err := l.Candidates(ctx)
	if err != nil {
		return d.DCs()
	}
	return urls
}

// domainLocator is the DC locator of a domain's configuration.
func domainLocator(d config.Domain) (*dclocator.Locator, error) {
	c := dclocator.Config{URLs: d.DCs()}
	if x := d.Discover; x != nil {
		c.DNSDomain, c.Site, c.Scheme, c.Resolver = d.DiscoverDomain(), x.Site, x.Scheme, x.Resolver
	}
	return dclocator.New(c)
}

func policyOf(cfg config.Config) rules.Policy {
	e, undo := cfg.Evaluator, cfg.Actuator.Undo
	return rules.Policy{
		IncludeOUs: e.Scope.IncludeOUs, BreakGlassUPNs: e.Scope.BreakGlassUPNs, BreakGlassGroups: e.Scope.BreakGlassGroups,
		IncludeDisabled: e.Scope.IncludeDisabled, ForcedChange: e.ForcedChange.Enabled,
		IncludeNeverExpires: e.ForcedChange.IncludeNeverExpires, Backfill: e.ForcedChange.Backfill,
		PasswordChanged: e.PasswordChanged.Enabled, DryRun: e.DryRun,
		IncludeGroups: e.Scope.IncludeGroups, IncludeEntraGroups: e.Scope.IncludeEntraGroups,
		ResetNotice: e.ForcedChange.Notify,
		Expiry: rules.ExpiryPolicy{Enabled: e.Expiry.Enabled, LeadDays: e.Expiry.LeadDays, Notify: e.Expiry.Notify,
			Enforce: e.Expiry.Enforce, MaxLate: e.Expiry.MaxLate},
		Cloud: rules.CloudPolicy{NeverExpires: e.NeverExpires.Enabled, DriftCooldown: e.Drift.Cooldown,
			PendingTimeout: e.Drift.PendingTimeout, WritebackWindow: e.Writeback.Window},
		Undo: rules.UndoPolicy{AwaitCloud: undo.AwaitCloud, ClearOnADChange: undo.ClearCloudFlag},
		Risk: riskPolicyOf(cfg),
	}
}
