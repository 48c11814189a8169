package dclocator

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers SRV questions from a table over UDP, as a DC's DNS would.
func dnsServer(t *testing.T, records map[string][]dnsmessage.SRVResource) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			name := strings.ToLower(q.Name.String())
			rcode := dnsmessage.RCodeSuccess
			srvs, ok := records[name]
			if !ok {
				rcode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: rcode})
			b.EnableCompression()
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			for _, s := range srvs {
				if q.Type == dnsmessage.TypeSRV {
					_ = b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET, TTL: 60}, s)
				}
			}
			out, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(out, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func srv(target string, prio, weight, port uint16) dnsmessage.SRVResource {
	return dnsmessage.SRVResource{Target: dnsmessage.MustNewName(target), Priority: prio, Weight: weight, Port: port}
}

func TestCandidates(t *testing.T) {
	addr := dnsServer(t, map[string][]dnsmessage.SRVResource{
		"_ldap._tcp.hq._sites.dc._msdcs.corp.test.": {srv("dc2.corp.test.", 0, 100, 389)},
		"_ldap._tcp.dc._msdcs.corp.test.": {
			srv("dc3.corp.test.", 10, 100, 389), srv("dc2.corp.test.", 0, 100, 389), srv("dc1.corp.test.", 0, 100, 389),
		},
	})
	tests := []struct {
		name string
		cfg  Config
		want []string // in order; "dc1|dc2" = either order (same priority and weight)
		err  string
	}{
		{"the configured list only", Config{URLs: []string{"ldaps://a:636", "ldaps://b:636"}}, []string{"ldaps://a:636", "ldaps://b:636"}, ""},
		{"the site first, then the domain by priority", Config{DNSDomain: "corp.test", Site: "hq", Resolver: addr},
			[]string{"ldaps://dc2.corp.test:636", "ldaps://dc1.corp.test:636", "ldaps://dc3.corp.test:636"}, ""},
		{"no site: the domain's, priority 0 before 10", Config{DNSDomain: "corp.test", Resolver: addr},
			[]string{"dc1|dc2", "dc1|dc2", "ldaps://dc3.corp.test:636"}, ""},
		{"the list before DNS, without repeating a DC", Config{URLs: []string{"ldaps://DC3.corp.test:636"}, DNSDomain: "corp.test", Site: "hq", Resolver: addr},
			[]string{"ldaps://DC3.corp.test:636", "ldaps://dc2.corp.test:636", "ldaps://dc1.corp.test:636"}, ""},
		{"plain LDAP keeps the SRV port", Config{DNSDomain: "corp.test", Site: "hq", Scheme: "ldap", Resolver: addr},
			[]string{"ldap://dc2.corp.test:389", "ldap://dc1.corp.test:389", "ldap://dc3.corp.test:389"}, ""},
		{"a site without records falls back to the domain", Config{DNSDomain: "corp.test", Site: "branch", Resolver: addr},
			[]string{"dc1|dc2", "dc1|dc2", "ldaps://dc3.corp.test:636"}, ""},
		{"nothing in DNS", Config{DNSDomain: "other.test", Resolver: addr}, nil, "no DC found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.Candidates(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				if w == "dc1|dc2" {
					if !slices.Contains([]string{"ldaps://dc1.corp.test:636", "ldaps://dc2.corp.test:636"}, got[i]) {
						t.Fatalf("got %v, want dc1 or dc2 at %d", got, i)
					}
					continue
				}
				if got[i] != w {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{{}, {URLs: []string{"ldaps://a"}, Scheme: "http"}, {DNSDomain: "x.test", Resolver: "nohostport"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
