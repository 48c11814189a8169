// Package auditship ships the audit trail (the AUDIT stream) to SIEMs:
// syslog (RFC 5424 over TLS or UDP, JSON or CEF), Microsoft Sentinel's Logs
// Ingestion API, and OpenTelemetry logs over OTLP/HTTP. Each sink has its
// own durable consumer and lease; a batch is acknowledged only once the
// sink accepted it, so a sink that is down keeps its backlog.
package auditship

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pwsync/pwsync/shared/events"
)

// truncMark ends a value cut to the sink's max_field.
const truncMark = "…[truncated]"

// clip cuts s to at most n bytes on a rune boundary, marked.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := max(n-len(truncMark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncMark
}

// bounded returns r with every free-text field clipped to n bytes: one
// hostile value must not make a record too large for the sink (rsyslog's
// message size, Sentinel's 64 KB field limit).
func bounded(r events.AuditRecord, n int) events.AuditRecord {
	for _, f := range []*string{&r.Kind, &r.EventID, &r.ActionID, &r.Rule, &r.Action, &r.Step, &r.User.UPN,
		&r.User.ObjectGUID, &r.User.DN, &r.User.Domain, &r.User.ImmutableID, &r.User.Mail, &r.User.CloudID, &r.CloudID, &r.Outcome, &r.Detail} {
		*f = clip(*f, n)
	}
	if r.Admin != nil {
		a := *r.Admin
		a.Principal, a.Method, a.Path = clip(a.Principal, n), clip(a.Method, n), clip(a.Path, n)
		r.Admin = &a
	}
	return r
}

// severity is the syslog severity of a record: failures are warnings,
// everything else informational.
func severity(r events.AuditRecord) int {
	switch r.Outcome {
	case events.OutcomeFailed, events.OutcomeDeadLetter:
		return 4
	}
	return 6
}

// jsonMessage is the record as pwsync audit export writes it (one line:
// JSON escapes newlines and control characters).
func jsonMessage(r events.AuditRecord) []byte {
	b, _ := json.Marshal(r) // an AuditRecord always encodes
	return b
}

// CEF: the header's fields escape \ and |; extension values escape \, =
// and line breaks (ArcSight CEF spec, "Character encoding"). Keys are ours.
var (
	cefHeader = strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\r\n", " ", "\n", " ", "\r", " ")
	cefValue  = strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\n", `\n`, "\r", `\r`)
)

// cefMessage renders the record as CEF:0 (README: "CEF field mapping").
func cefMessage(r events.AuditRecord, version string) []byte {
	sig, name := r.Kind, r.Kind
	if what := firstNonEmpty(r.Step, r.Action, r.Rule); what != "" {
		sig, name = r.Kind+":"+what, r.Kind+" "+what
	}
	if r.Outcome != "" {
		name += " " + r.Outcome
	}
	sev := 3
	switch r.Outcome {
	case events.OutcomeFailed:
		sev = 7
	case events.OutcomeDeadLetter:
		sev = 8
	}
	var b strings.Builder
	b.WriteString("CEF:0|pwsync|pwsync|")
	for _, f := range []string{version, sig, name} {
		b.WriteString(cefHeader.Replace(ctrl(f)))
		b.WriteByte('|')
	}
	b.WriteString(strconv.Itoa(sev))
	b.WriteByte('|')
	first := true
	ext := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cefValue.Replace(ctrl(v)))
	}
	ext("rt", strconv.FormatInt(r.Time.UnixMilli(), 10))
	ext("cat", r.Kind)
	ext("act", r.Action)
	ext("outcome", r.Outcome)
	ext("duser", r.User.UPN)
	ext("duid", r.User.ObjectGUID)
	ext("dntdom", r.User.Domain)
	ext("cs1Label", label(r.Rule, "rule"))
	ext("cs1", r.Rule)
	ext("cs2Label", label(r.Step, "step"))
	ext("cs2", r.Step)
	ext("cs3Label", label(r.EventID, "eventId"))
	ext("cs3", r.EventID)
	ext("cs4Label", label(r.ActionID, "actionId"))
	ext("cs4", r.ActionID)
	ext("cs5Label", label(r.CloudID, "cloudUserId"))
	ext("cs5", r.CloudID)
	if r.HTTPStatus != 0 {
		ext("cn1Label", "httpStatus")
		ext("cn1", strconv.Itoa(r.HTTPStatus))
	}
	if r.LatencyMS != 0 {
		ext("cfp1Label", "latencyMs")
		ext("cfp1", strconv.FormatFloat(r.LatencyMS, 'f', 3, 64))
	}
	if a := r.Admin; a != nil {
		ext("suser", a.Principal)
		ext("requestMethod", a.Method)
		ext("request", a.Path)
	}
	ext("msg", r.Detail)
	return []byte(b.String())
}

// ctrl replaces control characters other than line breaks (which the
// escapers turn into \n) with U+FFFD: a raw NUL or ESC has no business in
// a SIEM record.
func ctrl(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(c rune) rune {
		if (c < 0x20 && c != '\n' && c != '\r') || c == 0x7f || (c >= 0x80 && c < 0xa0) || c == '\u2028' || c == '\u2029' {
			return '\uFFFD'
		}
		return c
	}, s)
}

func label(v, l string) string {
	if v == "" {
		return ""
	}
	return l
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// syslogHeader is RFC 5424's HEADER and STRUCTURED-DATA (nil) for one record.
type syslogHeader struct {
	Facility int
	Hostname string
	AppName  string
}

// rfc5424 renders one syslog message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME
// PROCID MSGID - MSG. Header fields are PRINTUSASCII without spaces (RFC
// 5424 6.2); MSG is the JSON or CEF text, which holds no line break.
func (h syslogHeader) rfc5424(r events.AuditRecord, msg []byte) []byte {
	pri := h.Facility*8 + severity(r)
	ts := r.Time.UTC()
	if ts.IsZero() {
		ts = time.Now().UTC()
	}
	out := make([]byte, 0, len(msg)+96)
	out = append(out, '<')
	out = strconv.AppendInt(out, int64(pri), 10)
	out = append(out, ">1 "...)
	out = ts.AppendFormat(out, "2006-01-02T15:04:05.000000Z")
	out = append(out, ' ')
	out = append(out, headerField(h.Hostname, 255)...)
	out = append(out, ' ')
	out = append(out, headerField(h.AppName, 48)...)
	out = append(out, " - "...)
	out = append(out, headerField(r.Kind, 32)...)
	out = append(out, " - "...)
	return append(out, msg...)
}

// headerField keeps a header field within PRINTUSASCII (33-126) and its
// length limit; empty is the NILVALUE "-".
func headerField(s string, n int) string {
	f := strings.Map(func(c rune) rune {
		if c < 33 || c > 126 {
			return '_'
		}
		return c
	}, s)
	if len(f) > n {
		f = f[:n]
	}
	if f == "" {
		return "-"
	}
	return f
}

// octetCounted frames a message for RFC 5425 (TLS) and RFC 6587 TCP:
// MSG-LEN SP SYSLOG-MSG. The length, not a delimiter, ends it, so no
// content can start another record.
func octetCounted(dst, msg []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}
