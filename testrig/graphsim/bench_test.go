package graphsim

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pwsync/pwsync/testrig/benchreport"
)

// BenchmarkFindByImmutableID is the identity-join lookup in a 10,000-user
// tenant, through HTTPS like a client.
func BenchmarkFindByImmutableID(b *testing.B) {
	// The simulator's own cost: Graph's read quota would answer 429 to a
	// tight loop, so it is off here.
	srv, err := Start(Options{ClientSecret: testSecret, ResourceUnitBudget: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	for i := range 10000 {
		srv.PutUser(User{UserPrincipalName: fmt.Sprintf("u%d@contoso.com", i), OnPremisesImmutableId: fmt.Sprintf("imm-%d", i), OnPremisesSyncEnabled: true})
	}
	e := &env{t: b, srv: srv, hc: srv.HTTPClient()}
	e.token = e.fetchToken(testSecret)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := e.do("GET", "/v1.0/users?$select=id&$filter="+url.QueryEscape(fmt.Sprintf("onPremisesImmutableId eq 'imm-%d'", i%10000)), nil)
		if r.status != 200 || len(r.json["value"].([]any)) != 1 {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}

// BenchmarkPatch is one passwordProfile PATCH through HTTPS.
func BenchmarkPatch(b *testing.B) {
	srv, err := Start(Options{ClientSecret: testSecret, WriteBudget: -1, ResourceUnitBudget: -1}) // the simulator's cost, not Graph's quotas
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	srv.PutUser(User{ID: "u1", UserPrincipalName: "u1@contoso.com"})
	e := &env{t: b, srv: srv, hc: srv.HTTPClient()}
	e.token = e.fetchToken(testSecret)
	body := []byte(`{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`)
	for b.Loop() {
		if r := e.do("PATCH", "/v1.0/users/u1", body); r.status != 204 {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}

// TestSimulatorReport runs the two benchmarks above and, as their same-run
// baseline, the same requests from the same client to a bare net/http
// server with the simulator's certificate (HTTPS, HTTP/2) whose handler
// answers at once: what the simulator's own work (auth, OData, the
// directory) adds to a round trip. Three alternating rounds, medians.
// Target: under 1 ms a request, so that tests through the simulator
// measure pwsync, not the simulator.
//
// benchreport: PWSYNC_BENCH_REPORT=1 -run ^TestSimulatorReport$
func TestSimulatorReport(t *testing.T) {
	if os.Getenv("PWSYNC_BENCH_REPORT") == "" {
		t.Skip("set PWSYNC_BENCH_REPORT=1 to run the simulator report")
	}
	for _, c := range []struct {
		name, desc string
		bench      func(*testing.B)
		floor      func(*testing.B)
	}{
		{"graphsim_find_by_immutable_id_us", "simulator: user lookup by onPremisesImmutableId in a 10,000-user tenant, HTTPS",
			BenchmarkFindByImmutableID, benchmarkFloor("GET", http.StatusOK)},
		{"graphsim_patch_us", "simulator: one passwordProfile PATCH, HTTPS",
			BenchmarkPatch, benchmarkFloor("PATCH", http.StatusNoContent)},
	} {
		var got, base []float64
		type side struct {
			f   func(*testing.B)
			dst *[]float64
		}
		for round := range 3 {
			order := []side{{c.bench, &got}, {c.floor, &base}}
			if round%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, sd := range order {
				r := testing.Benchmark(sd.f)
				if r.N == 0 {
					t.Fatalf("%s: a benchmark failed (round %d)", c.name, round)
				}
				*sd.dst = append(*sd.dst, float64(r.T.Nanoseconds())/float64(r.N)/1000)
			}
		}
		benchreport.Emit(benchreport.Figure{Name: c.name, Desc: c.desc, Unit: "us/op", Better: "lower",
			Value: medianOf(got), Baseline: medianOf(base), BaselineName: "bare net/http HTTPS handler, same client and request", Target: "<= 1000"})
	}
}

func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

// benchmarkFloor sends the benchmarks' request shape (method, bearer token,
// JSON body for a PATCH) through the simulator's own client code to a bare
// server answering status (with a one-user page for a GET).
func benchmarkFloor(method string, status int) func(*testing.B) {
	return func(b *testing.B) {
		sim, err := Start(Options{ClientSecret: testSecret})
		if err != nil {
			b.Fatal(err)
		}
		defer sim.Close()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		page := []byte(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(id)","value":[{"id":"u1"}]}`)
		floor := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if status == http.StatusOK {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(status)
					_, _ = w.Write(page)
					return
				}
				w.WriteHeader(status)
			}),
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{sim.ca.serverCert}, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() { _ = floor.ServeTLS(ln, "", "") }()
		defer floor.Close()
		// The env's client code, pointed at the bare server (same CA).
		e := &env{t: b, srv: sim, hc: sim.HTTPClient()}
		e.token = e.fetchToken(testSecret)
		e.srv = &Server{url: "https://" + ln.Addr().String()}
		body := []byte(`{"passwordProfile":{"forceChangePasswordNextSignIn":true}}`)
		for i := 0; b.Loop(); i++ {
			if method == "GET" {
				r := e.do("GET", "/v1.0/users?$select=id&$filter="+url.QueryEscape(fmt.Sprintf("onPremisesImmutableId eq 'imm-%d'", i%10000)), nil)
				if r.status != status || len(r.json["value"].([]any)) != 1 {
					b.Fatalf("%d %s", r.status, r.raw)
				}
				continue
			}
			if r := e.do(method, "/v1.0/users/u1", body); r.status != status {
				b.Fatalf("%d %s", r.status, r.raw)
			}
		}
	}
}
