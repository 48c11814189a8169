package main

import (
	"fmt"
	"testing"

	"github.com/pwsync/pwsync/shared/config"
	"github.com/pwsync/pwsync/testrig/adtest"
	"github.com/pwsync/pwsync/testrig/graphsim"
)

// runSim starts a Graph simulator for one test, closed when the test ends,
// and writes its CA certificate to caFile ("": not written).
func runSim(t testing.TB, o graphsim.Options, caFile string) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.Start(o)
	if err != nil {
		t.Fatalf("starting the graph simulator: %v", err)
	}
	t.Cleanup(sim.Close)
	if caFile != "" {
		if err := sim.WriteCAFile(caFile); err != nil {
			t.Fatal(err)
		}
	}
	return sim
}

// useSim points cfg's graph section at sim (its CA in caFile).
func useSim(cfg *config.Config, sim *graphsim.Server, secret, caFile string) {
	cfg.Graph.TenantID, cfg.Graph.ClientID, cfg.Graph.ClientSecret = sim.TenantID(), sim.ClientID(), config.NewSecret(secret)
	cfg.Graph.AuthorityHost, cfg.Graph.BaseURL, cfg.Graph.CAFile = sim.AuthorityHost(), sim.GraphBaseURL(), caFile
}

// adGraphYAML is the ad and graph sections of a test config: one domain
// named domain on dc, Graph on sim (its CA in graphCA); the secrets come
// from PWSYNC_TEST_AD_PASSWORD and PWSYNC_TEST_GRAPH_SECRET.
func adGraphYAML(domain string, dc *adtest.DC, sim *graphsim.Server, graphCA string) string {
	return fmt.Sprintf(`
ad:
  domains:
    - name: %s
      url: %s
      ca_file: %s
      bind_dn: "%s"
      bind_password: env:PWSYNC_TEST_AD_PASSWORD
      base_dn: %s
graph:
  tenant_id: %s
  client_id: %s
  client_secret: env:PWSYNC_TEST_GRAPH_SECRET
  authority_host: %s
  base_url: %s
  ca_file: %s
`, domain, dc.LDAPSURL, dc.CAFile, dc.BindDN, dc.BaseDN, sim.TenantID(), sim.ClientID(), sim.AuthorityHost(), sim.GraphBaseURL(), graphCA)
}
