package auditship

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pwsync/pwsync/shared/events"
)

func sample() events.AuditRecord {
	return events.AuditRecord{Time: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), Kind: "step", EventID: "ev1", ActionID: "a1",
		Rule: "forced-change", Action: "require_password_change", Step: "patch_password_profile",
		User: events.UserRef{UPN: "alice@example.test", ObjectGUID: "g-1", Domain: "example.test"}, CloudID: "c-1",
		Outcome: events.OutcomeOK, HTTPStatus: 204, LatencyMS: 812.5, Detail: "done"}
}

// cefExt splits a CEF extension into key/value pairs the way a receiver
// does: a key is a word followed by an unescaped =.
var cefKey = regexp.MustCompile(`(?:^| )([A-Za-z0-9_]+)=`)

func parseCEF(t testing.TB, line string) (header []string, ext map[string]string) {
	t.Helper()
	// Header: 7 fields separated by unescaped |.
	var cur strings.Builder
	i := 0
	for ; i < len(line) && len(header) < 7; i++ {
		switch c := line[i]; {
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(line[i+1])
			i++
		case c == '|':
			header = append(header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(header) != 7 {
		t.Fatalf("CEF header has %d fields: %q", len(header), line)
	}
	rest := line[i:]
	ext = map[string]string{}
	// Unescaped '=' only follows keys; find them by scanning escapes.
	var keys []int // positions of key starts
	for j := 0; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '=' {
			k := j - 1
			for k >= 0 && rest[k] != ' ' {
				k--
			}
			keys = append(keys, k+1)
		}
	}
	for n, start := range keys {
		end := len(rest)
		if n+1 < len(keys) {
			end = keys[n+1] - 1
		}
		kv := rest[start:end]
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := ext[k]; dup {
			t.Fatalf("duplicate CEF key %q in %q", k, line)
		}
		ext[k] = strings.NewReplacer(`\\`, `\`, `\=`, `=`, `\n`, "\n", `\r`, "\r").Replace(v)
	}
	return header, ext
}

func TestCEFMapping(t *testing.T) {
	r := sample()
	r.Admin = &events.AdminRequest{Principal: "admin@example.test", Method: "POST", Path: "/v1/campaigns"}
	h, ext := parseCEF(t, string(cefMessage(r, "1.2.3")))
	want := []string{"CEF:0", "pwsync", "pwsync", "1.2.3", "step:patch_password_profile", "step patch_password_profile ok", "3"}
	for i := range want {
		if h[i] != want[i] {
			t.Errorf("header[%d] = %q, want %q", i, h[i], want[i])
		}
	}
	for k, v := range map[string]string{"rt": strconv.FormatInt(r.Time.UnixMilli(), 10), "cat": "step", "act": "require_password_change",
		"outcome": "ok", "duser": "alice@example.test", "duid": "g-1", "dntdom": "example.test", "cs1": "forced-change", "cs1Label": "rule",
		"cs2": "patch_password_profile", "cs3": "ev1", "cs4": "a1", "cs5": "c-1", "cn1": "204", "cn1Label": "httpStatus",
		"cfp1": "812.500", "suser": "admin@example.test", "requestMethod": "POST", "request": "/v1/campaigns", "msg": "done"} {
		if ext[k] != v {
			t.Errorf("%s = %q, want %q", k, ext[k], v)
		}
	}
}

// hostile values: each tries to end the record, start another, or add a
// CEF field or header column.
var hostile = []string{
	"x\nCEF:0|evil|evil|1|forged|forged|10|duser=root",
	"a|b|c|d",
	"duser=root outcome=ok",
	`back\slash\`,
	"cr\rlf\r\n<13>1 2026-01-01T00:00:00Z host app - - - forged",
	"nul\x00esc\x1b",
	"\u2028line sep",
	"bad utf8 \xff\xfe",
	"123 <14>1 - - - - - - forged", // looks like an octet count
	strings.Repeat("long=|\\\n", 5000),
}

func TestHostileFieldsStayInTheirRecord(t *testing.T) {
	for _, v := range hostile {
		r := sample()
		r.Detail, r.User.UPN, r.Rule, r.Step = v, v, v, v
		r = bounded(r, 4096)
		for _, format := range []string{"cef", "json"} {
			msg := cefMessage(r, "1")
			if format == "json" {
				msg = jsonMessage(r)
			}
			line := string(msg)
			if strings.ContainsAny(line, "\n\r\x00") || !utf8.ValidString(line) {
				t.Fatalf("%s: raw control character or invalid UTF-8 in %q", format, line)
			}
			if format == "cef" {
				h, ext := parseCEF(t, line)
				if ext["duser"] != clipCtrl(v) || ext["msg"] != clipCtrl(v) || h[6] != "3" {
					t.Fatalf("cef: value changed or forged field: duser=%q msg=%q sev=%q", ext["duser"], ext["msg"], h[6])
				}
				if len(ext) != 22 {
					t.Fatalf("cef: %d fields, want 22 (forged ones?): %v", len(ext), keys(ext))
				}
			} else {
				var back events.AuditRecord
				if err := json.Unmarshal(msg, &back); err != nil || back.Detail != strings.ToValidUTF8(r.Detail, "\uFFFD") {
					t.Fatalf("json: %v %q", err, back.Detail)
				}
			}
			framed := octetCounted(nil, syslogHeader{Facility: 10, Hostname: "h", AppName: "pwsync"}.rfc5424(r, msg))
			recs := readOctetCounted(t, framed)
			if len(recs) != 1 {
				t.Fatalf("%s: %d records framed, want 1", format, len(recs))
			}
		}
	}
}

func clipCtrl(v string) string { return ctrl(clip(v, 4096)) }

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readOctetCounted splits an RFC 5425 stream as a receiver does.
func readOctetCounted(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	rd := bufio.NewReader(bytes.NewReader(b))
	for {
		lenStr, err := rd.ReadString(' ')
		if err != nil {
			if lenStr != "" {
				t.Fatalf("trailing bytes: %q", lenStr)
			}
			return out
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
		if err != nil || n <= 0 {
			t.Fatalf("bad length %q", lenStr)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(rd, msg); err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
	}
}

func TestRFC5424Header(t *testing.T) {
	r := sample()
	r.Outcome = events.OutcomeFailed
	got := string(syslogHeader{Facility: 10, Hostname: "dc 1\n", AppName: "pwsync"}.rfc5424(r, []byte("{}")))
	want := "<84>1 2026-03-10T12:00:00.000000Z dc_1_ pwsync - step - {}"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("a", 40), 20, strings.Repeat("a", 20-len(truncMark)) + truncMark},
		{strings.Repeat("é", 20), 20, strings.Repeat("é", 3) + truncMark}, // 6 bytes + the mark; no cut inside a rune
	} {
		if got := clip(c.in, c.n); got != c.want || len(got) > max(c.n, len(c.in)) {
			t.Errorf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func FuzzCEF(f *testing.F) {
	for _, v := range hostile {
		f.Add(v, v)
	}
	f.Fuzz(func(t *testing.T, detail, upn string) {
		r := sample()
		r.Detail, r.User.UPN = detail, upn
		r = bounded(r, 1024)
		line := string(cefMessage(r, "1"))
		if strings.ContainsAny(line, "\n\r") || !utf8.ValidString(line) {
			t.Fatalf("line break or invalid UTF-8: %q", line)
		}
		h, ext := parseCEF(t, line)
		if h[0] != "CEF:0" || h[1] != "pwsync" || h[6] != "3" {
			t.Fatalf("header forged: %q", h)
		}
		if ext["msg"] != ctrl(r.Detail) || ext["duser"] != ctrl(r.User.UPN) || ext["outcome"] != "ok" {
			t.Fatalf("fields changed: msg=%q duser=%q outcome=%q", ext["msg"], ext["duser"], ext["outcome"])
		}
	})
}

func FuzzRFC5424(f *testing.F) {
	for _, v := range hostile {
		f.Add(v, v, "step")
	}
	f.Fuzz(func(t *testing.T, detail, host, kind string) {
		r := sample()
		r.Detail, r.Kind = detail, kind
		r = bounded(r, 1024)
		var stream []byte
		for _, msg := range [][]byte{jsonMessage(r), cefMessage(r, "1")} {
			stream = octetCounted(stream, syslogHeader{Facility: 10, Hostname: host, AppName: "pwsync"}.rfc5424(r, msg))
		}
		recs := readOctetCounted(t, stream)
		if len(recs) != 2 {
			t.Fatalf("%d records, want 2", len(recs))
		}
		for _, m := range recs {
			// HEADER: PRI VERSION TIMESTAMP HOSTNAME APP PROCID MSGID SD, single spaces, printable ASCII.
			parts := strings.SplitN(string(m), " ", 8)
			if len(parts) != 8 || parts[6] != "-" {
				t.Fatalf("header: %q", m)
			}
			for _, p := range parts[:7] {
				if p == "" || strings.IndexFunc(p, func(c rune) bool { return c < 33 || c > 126 }) >= 0 {
					t.Fatalf("header field %q not PRINTUSASCII: %q", p, m)
				}
			}
			if bytes.ContainsAny(m, "\n\r") {
				t.Fatalf("line break in %q", m)
			}
		}
		var back events.AuditRecord
		if err := json.Unmarshal(bytes.SplitN(recs[0], []byte(" "), 8)[7], &back); err != nil {
			t.Fatalf("json message: %v", err)
		}
	})
}

// TestUDPMessageFitsADatagram: every free-text field at max_field still
// makes a datagram UDP can carry.
func TestUDPMessageFitsADatagram(t *testing.T) {
	r := sample()
	long := strings.Repeat("x", 60000)
	r.Detail, r.User.UPN, r.Rule, r.Step, r.Action, r.EventID, r.ActionID, r.CloudID = long, long, long, long, long, long, long, long
	s := &syslogSink{cfg: SyslogConfig{Network: "udp", Format: "json", MaxField: 60000, Header: syslogHeader{Facility: 10, Hostname: "h", AppName: "pwsync"}}}
	if n := len(s.message(r)); n > maxDatagram {
		t.Fatalf("UDP message of %d bytes", n)
	}
	s.cfg.Network = "tls"
	if n := len(s.message(r)); n <= maxDatagram {
		t.Fatalf("TLS message cut to %d bytes: only UDP needs it", n)
	}
}
