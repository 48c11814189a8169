// Package config loads and validates pwsync's YAML configuration. Unknown keys,
// missing required values and invalid values stop start-up with an error that
// names the key, e.g. `graph.client_id: required`.
package config

import (
	"time"
)

// Config is the whole configuration file. Defaults come from Default().
type Config struct {
	Log       Log       `yaml:"log"`
	NATS      NATS      `yaml:"nats"`
	AD        AD        `yaml:"ad"`
	Graph     Graph     `yaml:"graph"`
	Webhook   Webhook   `yaml:"webhook"`
	Evaluator Evaluator `yaml:"evaluator"`
	Actuator  Actuator  `yaml:"actuator"`
	Notify    Notify    `yaml:"notify"`
	Campaigns Campaigns `yaml:"campaigns"`
	Ops       Ops       `yaml:"ops"`
	Admin     Admin     `yaml:"admin"`
	Audit     Audit     `yaml:"audit"`    // shipping the audit trail to SIEMs (audit.go)
	Risk      Risk      `yaml:"risk"`     // Entra ID Protection -> AD (risk.go)
	Instance  string    `yaml:"instance"` // this replica's stable name in leases (instance.go)
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// NATS says which NATS to use: the embedded server when URL is empty.
type NATS struct {
	URL       string   `yaml:"url"`
	CredsFile string   `yaml:"creds_file"`
	NKeyFile  string   `yaml:"nkey_file"`
	CAFile    string   `yaml:"ca_file"`
	Replicas  int      `yaml:"replicas"`
	Embedded  Embedded `yaml:"embedded"`
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	DataDir string `yaml:"data_dir"`
	Listen  string `yaml:"listen"` // host:port to let other processes connect; empty = in-process only
	// MaxStore bounds JetStream's disk use; 0 = nats-server's default (most of the free disk).
	MaxStore ByteSize `yaml:"max_store"`
}

// AD lists the domains to watch.
type AD struct {
	Domains []Domain `yaml:"domains"`
}

// Domain is one AD domain and how to reach its DCs.
type Domain struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"` // one DC; or urls, or discover
	// URLs are the domain's DCs, preferred first (after url, if set).
	URLs []string `yaml:"urls"`
	// Discover finds (more) DCs in DNS, after the ones named.
	Discover *Discover `yaml:"discover"`
	// PreferredProbe: while on a fallback DC, how often the preferred ones
	// are tried again (default 30s).
	PreferredProbe     time.Duration `yaml:"preferred_probe"`
	StartTLS           bool          `yaml:"start_tls"`
	CAFile             string        `yaml:"ca_file"`
	InsecureSkipVerify bool          `yaml:"insecure_skip_verify"`
	AllowPlain         bool          `yaml:"allow_plain"`
	BindDN             string        `yaml:"bind_dn"`
	BindPassword       Secret        `yaml:"bind_password"`
	Kerberos           *Kerberos     `yaml:"kerberos"` // instead of bind_dn/bind_password (kerberos.go)
	BaseDN             string        `yaml:"base_dn"`
	UserFilter         string        `yaml:"user_filter"`
	Mode               string        `yaml:"mode"` // dirsync | usn | auto
	PollInterval       time.Duration `yaml:"poll_interval"`
	Notifications      *bool         `yaml:"notifications"`
	PageSize           int           `yaml:"page_size"`
	// SourceAnchor: objectGUID (default) or ms-DS-ConsistencyGuid, as Entra
	// Connect is configured; its base64 is onPremisesImmutableId.
	SourceAnchor string `yaml:"source_anchor"`
}

// Graph configures the Microsoft Graph client.
type Graph struct {
	TenantID            string        `yaml:"tenant_id"`
	ClientID            string        `yaml:"client_id"`
	ClientSecret        Secret        `yaml:"client_secret"`
	CertificateFile     string        `yaml:"certificate_file"`
	CertificatePassword Secret        `yaml:"certificate_password"`
	AuthorityHost       string        `yaml:"authority_host"`
	BaseURL             string        `yaml:"base_url"`
	CAFile              string        `yaml:"ca_file"`
	Timeout             time.Duration `yaml:"timeout"`
}

// Webhook configures the Graph change-notification receiver.
type Webhook struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	// PublicURL is the HTTPS URL Graph calls (the ingress in front of Listen).
	PublicURL string `yaml:"public_url"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	MaxBody   int64  `yaml:"max_body"`
	// DeltaInterval: delta query rounds without notifications (catch-up).
	DeltaInterval time.Duration `yaml:"delta_interval"`
	// DedupWindow: a user notification carries no ID, so two identical ones
	// arriving within this window are taken for Graph's redelivery of one
	// (0 = the receiver's default, 1m). A real second change within it waits
	// for the next delta round.
	DedupWindow time.Duration `yaml:"dedup_window"`
}

// Evaluator configures the rules.
type Evaluator struct {
	DryRun          bool            `yaml:"dry_run"`
	Scope           Scope           `yaml:"scope"`
	ForcedChange    ForcedChange    `yaml:"forced_change"`
	PasswordChanged PasswordChanged `yaml:"password_changed"`
	NeverExpires    NeverExpires    `yaml:"never_expires"`
	Drift           Drift           `yaml:"drift"`
	Writeback       Writeback       `yaml:"writeback"`
	Expiry          Expiry          `yaml:"expiry"`
	Reevaluate      Reevaluate      `yaml:"reevaluate"`
}

// Reevaluate configures re-evaluating every known user when the rules
// policy changed between two starts (a rule turned on, a wider scope).
type Reevaluate struct {
	Enabled bool `yaml:"enabled"`
	// Rate: users per second.
	Rate float64 `yaml:"rate"`
}

// NeverExpires configures the never-expires rule.
type NeverExpires struct {
	// Enabled keeps passwordPolicies' DisablePasswordExpiration equal to AD's
	// "password never expires", for tenants that use the cloud expiry policy
	// for synced users.
	Enabled bool `yaml:"enabled"`
}

// Drift configures re-applying the desired cloud state.
type Drift struct {
	// Cooldown: a second drift of the same user within it is alerted, not re-applied.
	Cooldown time.Duration `yaml:"cooldown"`
	// PendingTimeout: how long pwsync's own write may take to show in delta.
	PendingTimeout time.Duration `yaml:"pending_timeout"`
}

// Writeback configures the password writeback gap alert.
type Writeback struct {
	// Window: a synced user's cloud password change that AD does not follow
	// within it raises an alert; 0 turns the check off.
	Window time.Duration `yaml:"window"`
}

// Scope says which users pwsync acts on.
type Scope struct {
	// IncludeOUs: users under one of these DNs are in scope; empty = the whole domain.
	IncludeOUs []string `yaml:"include_ous"`
	// BreakGlassUPNs are never written to, whatever else says.
	BreakGlassUPNs []string `yaml:"break_glass_upns"`
	// BreakGlassGroups: members (direct memberOf DN) are never written to.
	BreakGlassGroups []string `yaml:"break_glass_groups"`
	IncludeDisabled  bool     `yaml:"include_disabled"`
	// IncludeGroups: members of these AD groups (DNs; nested membership
	// counts) are in scope too. See expiry.go for the Entra keys.
	IncludeGroups      []string      `yaml:"include_groups"`
	IncludeEntraGroups []string      `yaml:"include_entra_groups"`
	EntraRefresh       time.Duration `yaml:"entra_refresh"`
}

// ForcedChange configures the forced-change rule.
type ForcedChange struct {
	Enabled bool `yaml:"enabled"`
	// IncludeNeverExpires (opt-in, stricter than AD) also acts on "password
	// never expires" accounts with pwdLastSet 0. AD lets those log on without
	// a change (MS-ADA3) and Entra Connect skips them; pwsync then signs them
	// out and blocks them in the cloud (typically service accounts).
	IncludeNeverExpires bool `yaml:"include_never_expires"`
	// Backfill acts on users already flagged when pwsync first syncs.
	Backfill bool `yaml:"backfill"`
	// BackfillThreshold: a backfill (or a re-evaluation after a policy
	// change) that would act on more users than this is held until an
	// approver approves it (pwsync backfill approve, or the console).
	BackfillThreshold int `yaml:"backfill_threshold"`
	// Notify tells the user "your password was reset" (notifier).
	Notify bool `yaml:"notify"`
}

// PasswordChanged configures the password-changed rule.
type PasswordChanged struct {
	Enabled bool `yaml:"enabled"`
}

// Actuator configures how actions become Graph calls.
type Actuator struct {
	Concurrency int `yaml:"concurrency"`
	// Identity join: how an AD user finds its cloud account.
	Identity Identity `yaml:"identity"`
	// CloudManaged: users whose cloud account is not synced from AD.
	CloudManaged CloudManaged `yaml:"cloud_managed"`
	// Synced: users synced by Entra Connect / Cloud Sync; Graph refuses
	// passwordProfile writes for them.
	Synced Synced `yaml:"synced"`
	// Undo: what password-changed undoes.
	Undo  Undo  `yaml:"undo"`
	Retry Retry `yaml:"retry"`
	// WriteBudget Graph writes per WriteWindow for this app and tenant
	// (Graph's documented identity write limit: 3,000 per 150 s); 0 = unpaced.
	WriteBudget int           `yaml:"write_budget"`
	WriteWindow time.Duration `yaml:"write_window"`
}

// Identity configures the AD <-> Entra join.
type Identity struct {
	UPNFallback bool `yaml:"upn_fallback"`
	// UPNSuffixMap rewrites AD UPN suffixes to cloud ones (e.g. corp.local: contoso.com).
	UPNSuffixMap map[string]string `yaml:"upn_suffix_map"`
}

// CloudManaged configures the must-change strategy for cloud-managed users.
type CloudManaged struct {
	WithMFA bool `yaml:"with_mfa"`
	// Verify reads passwordProfile back after the PATCH.
	Verify bool `yaml:"verify"`
	// Fallback when the flag did not take: temporary_password | chain | none.
	Fallback       string `yaml:"fallback"`
	RevokeSessions bool   `yaml:"revoke_sessions"`
}

// Synced configures the chain for synced users.
type Synced struct {
	RevokeSessions bool `yaml:"revoke_sessions"`
	// PendingGroupID: Entra group that a Conditional Access policy blocks
	// until the password is changed; empty = no group step.
	PendingGroupID string `yaml:"pending_group_id"`
	// TryCloudFlag first tries the passwordProfile PATCH for synced users too
	// (it works in some tenants); Graph's 400 "on-premises mastered" then
	// leads to the chain, once, without retries.
	TryCloudFlag bool `yaml:"try_cloud_flag"`
}

// Undo configures password-changed: what it undoes, and when.
type Undo struct {
	// ClearCloudFlag undoes a cloud-managed user's forced change (clears the
	// flag pwsync set, leaves the pending group) at AD's password change.
	// Only for organisations whose other tool copies AD passwords to those
	// accounts: a cloud-managed account's cloud password is not AD's, so
	// clearing at AD's change means its cloud password is never changed.
	// Off (default): Entra clears the flag when the user changes the cloud
	// password, and pwsync undoes the rest then.
	ClearCloudFlag         bool `yaml:"clear_cloud_flag"`
	RemoveFromPendingGroup bool `yaml:"remove_from_pending_group"`
	// AwaitCloud: a synced user leaves the pending group when Entra has the
	// new password (password hash sync, ~2 minutes), at most this long after
	// AD's change; then anyway, with an alert to the admins. 0 = at AD's change.
	AwaitCloud time.Duration `yaml:"await_cloud"`
}

// Retry configures in-process retries before handing back to JetStream.
type Retry struct {
	MaxAttempts     int           `yaml:"max_attempts"`
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	// LongWait: a Retry-After longer than this is handed back to JetStream.
	LongWait time.Duration `yaml:"long_wait"`
}

// Ops configures the operations listener.
type Ops struct {
	Listen string `yaml:"listen"`
	// Metrics serves Prometheus metrics on the listener's /metrics.
	Metrics bool `yaml:"metrics"`
	// Pprof serves Go's profiles (net/http/pprof) on /debug/pprof/: off by
	// default, for finding where memory goes (the soak benchmark uses it).
	// The listener has no authentication: turn it on where only operators reach it.
	Pprof bool `yaml:"pprof"`
	// SampleInterval: how often consumer lag and lease holders are read from NATS.
	SampleInterval time.Duration `yaml:"sample_interval"`
}

// Default returns the configuration every file starts from.
func Default() Config {
	return Config{
		Log:  Log{Level: "info", Format: "json"},
		NATS: NATS{Replicas: 1, Embedded: Embedded{DataDir: "./data/nats"}},
		Graph: Graph{
			AuthorityHost: "https://login.microsoftonline.com/",
			BaseURL:       "https://graph.microsoft.com/v1.0",
			Timeout:       30 * time.Second,
		},
		Webhook: Webhook{Listen: ":8443", MaxBody: 1 << 20, DeltaInterval: 5 * time.Minute},
		Evaluator: Evaluator{
			ForcedChange:    ForcedChange{Enabled: true, IncludeNeverExpires: false, Backfill: true, BackfillThreshold: 100},
			PasswordChanged: PasswordChanged{Enabled: true},
			Drift:           Drift{Cooldown: time.Hour, PendingTimeout: 10 * time.Minute},
			Writeback:       Writeback{Window: 15 * time.Minute},
			Expiry:          defaultExpiry(),
			Scope:           Scope{EntraRefresh: 15 * time.Minute},
			// 20 users/s: 10,000 known users in about 8 minutes, a fraction
			// of the actuator's write budget when many of them need a write
			Reevaluate: Reevaluate{Enabled: true, Rate: 20},
		},
		Actuator: Actuator{
			Concurrency:  16,
			Identity:     Identity{UPNFallback: true},
			CloudManaged: CloudManaged{Verify: true, Fallback: "chain", RevokeSessions: true},
			Synced:       Synced{RevokeSessions: true},
			Undo:         Undo{ClearCloudFlag: false, RemoveFromPendingGroup: true, AwaitCloud: 5 * time.Minute},
			Retry: Retry{MaxAttempts: 4, InitialInterval: 200 * time.Millisecond,
				MaxInterval: 5 * time.Second, LongWait: 10 * time.Second},
			WriteBudget: 3000,
			WriteWindow: 150 * time.Second,
		},
		Notify:          defaultNotify(),
		Campaigns:       defaultCampaigns(),
		Ops:             Ops{Listen: "127.0.0.1:9090", Metrics: true, SampleInterval: 15 * time.Second},
		Admin:           defaultAdmin(),
		Risk:            defaultRisk(),
		ShutdownTimeout: 20 * time.Second,
	}
}

// DomainDefaults fills the per-domain defaults.
func (d *Domain) applyDefaults() {
	if d.Mode == "" {
		d.Mode = "dirsync"
	}
	if d.PollInterval == 0 {
		d.PollInterval = 2 * time.Second
	}
	if d.Notifications == nil {
		on := true
		d.Notifications = &on
	}
	if d.PageSize == 0 {
		d.PageSize = 500
	}
	if d.SourceAnchor == "" {
		d.SourceAnchor = "objectGUID"
	}
	if d.UserFilter == "" {
		d.UserFilter = "(&(objectCategory=person)(objectClass=user))"
	}
}
