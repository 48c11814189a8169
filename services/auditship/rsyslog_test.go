package auditship

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rsyslog is Debian's rsyslogd (with rsyslog-gnutls) run by the test on
// loopback: RFC 5425 over TLS with our test CA, requiring a client
// certificate, and UDP; every message goes to a file the test reads.
type rsyslog struct {
	dir, conf, out   string
	tlsAddr, udpAddr string
	ca               *x509.Certificate
	caFile           string
	clientCert       string
	clientKey        string
	cmd              *exec.Cmd
}

const rsyslogd = "/usr/sbin/rsyslogd"

func startRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	if _, err := os.Stat(rsyslogd); err != nil {
		if os.Getenv("PWSYNC_REQUIRE_RSYSLOG") != "" {
			t.Fatalf("rsyslogd missing (apt-get install rsyslog rsyslog-gnutls; make test does): %v", err)
		}
		t.Skip("rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)")
	}
	dir := t.TempDir()
	rs := &rsyslog{dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "out.log"),
		tlsAddr: freeAddr(t, "tcp"), udpAddr: freeAddr(t, "udp")}
	rs.writeCerts(t)
	_, tlsPort, _ := net.SplitHostPort(rs.tlsAddr)
	_, udpPort, _ := net.SplitHostPort(rs.udpAddr)
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory="%[1]s/work" maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="%[1]s/ca.pem"
  defaultNetstreamDriverCertFile="%[1]s/server.pem"
  defaultNetstreamDriverKeyFile="%[1]s/server.key")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imtcp" port="%[2]s" address="127.0.0.1")
module(load="imudp")
input(type="imudp" port="%[3]s" address="127.0.0.1")
template(name="line" type="string" string="%%inputname%% %%app-name%% %%msgid%% %%msg%%\n")
*.* action(type="omfile" file="%[1]s/out.log" template="line")
`, dir, tlsPort, udpPort)
	if err := os.WriteFile(rs.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	rs.start(t)
	t.Cleanup(func() { rs.stop(t) })
	return rs
}

func (rs *rsyslog) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(rsyslogd, "-n", "-f", rs.conf, "-i", filepath.Join(rs.dir, "rsyslogd.pid"))
	log, err := os.OpenFile(filepath.Join(rs.dir, "rsyslogd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rsyslogd: %v", err)
	}
	rs.cmd = cmd
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", rs.tlsAddr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(rs.dir, "rsyslogd.log"))
			t.Fatalf("rsyslogd did not listen on %s: %v\n%s", rs.tlsAddr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends rsyslogd gracefully (SIGTERM: it writes what it received).
func (rs *rsyslog) stop(t testing.TB) {
	if rs.cmd == nil {
		return
	}
	_ = rs.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = rs.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = rs.cmd.Process.Kill()
		<-done
	}
	rs.cmd = nil
}

// line is one message as rsyslog wrote it.
type line struct{ input, app, msgid, msg string }

func (rs *rsyslog) lines(t testing.TB) []line {
	t.Helper()
	f, err := os.Open(rs.out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) != 4 {
			t.Fatalf("rsyslog wrote an unexpected line: %q", sc.Text())
		}
		out = append(out, line{parts[0], parts[1], parts[2], strings.TrimLeft(parts[3], " ")})
	}
	return out
}

func freeAddr(t testing.TB, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeCerts makes a test CA, rsyslog's server certificate for
// 127.0.0.1 and a client certificate for the shipper.
func (rs *rsyslog) writeCerts(t testing.TB) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pwsync test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	rs.ca, _ = x509.ParseCertificate(caDER)
	rs.caFile = filepath.Join(rs.dir, "ca.pem")
	writePEM(t, rs.caFile, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost", name}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, rs.ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		writePEM(t, filepath.Join(rs.dir, name+".pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(rs.dir, name+".key"), "PRIVATE KEY", kder)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth)
	leaf("client", 3, x509.ExtKeyUsageClientAuth)
	rs.clientCert, rs.clientKey = filepath.Join(rs.dir, "client.pem"), filepath.Join(rs.dir, "client.key")
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientTLS is the shipper's TLS config for this rsyslog.
func (rs *rsyslog) clientTLS(t testing.TB) *tls.Config {
	t.Helper()
	tc, err := SyslogTLS(rs.caFile, "127.0.0.1", rs.clientCert, rs.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}
