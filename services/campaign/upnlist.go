package campaign

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on an imported list.
const (
	MaxImportBytes = 8 << 20
	MaxUPNs        = 200_000
	maxUPNLength   = 113 // Entra: 64 for the local part, 48 for the domain, plus '@'
)

// headerNames are column titles that hold the UPN, compared case- and
// space-insensitively.
var headerNames = []string{"userprincipalname", "upn", "user", "username", "email", "mail", "emailaddress"}

// LineError is an import line that held no usable UPN.
type LineError struct {
	Line   int    `json:"line"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// ParseUPNs reads a list of UPNs: a CSV file (comma or semicolon separated,
// quotes, a UTF-8 BOM and a header row all optional) or one UPN per line.
// The UPN column is the one whose header is userPrincipalName, upn, mail...
// or, without a header, the first column that holds an '@'. UPNs come back
// lower-cased, trimmed, and deduplicated in first-seen order; unusable lines
// come back as LineErrors (at most 100 are kept), never silently dropped.
func ParseUPNs(r io.Reader) ([]string, []LineError, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxImportBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading UPN list: %w", err)
	}
	if len(data) > MaxImportBytes {
		return nil, nil, fmt.Errorf("UPN list larger than %d bytes", MaxImportBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return nil, nil, errors.New("UPN list is not UTF-8 text")
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comma = sniffComma(data)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.LazyQuotes = true
	cr.ReuseRecord = true

	var (
		out      []string
		problems []LineError
		seen     = map[string]bool{}
		col      = -1
		first    = true
	)
	addProblem := func(line int, v, why string) {
		if len(problems) < 100 {
			problems = append(problems, LineError{Line: line, Value: truncateRunes(v, 80), Reason: why})
		}
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				addProblem(pe.Line, "", pe.Err.Error())
				continue
			}
			return nil, problems, fmt.Errorf("reading UPN list: %w", err)
		}
		if blank(rec) {
			continue
		}
		if first {
			first = false
			if c := headerColumn(rec); c >= 0 {
				col = c
				continue
			}
		}
		c := col
		if c < 0 {
			c = firstWithAt(rec)
		}
		if c < 0 || c >= len(rec) {
			addProblem(line, strings.Join(rec, string(cr.Comma)), "no UPN on this line")
			continue
		}
		upn, why := normalUPN(rec[c])
		if why != "" {
			addProblem(line, rec[c], why)
			continue
		}
		if seen[upn] {
			continue
		}
		if len(out) == MaxUPNs {
			return nil, problems, fmt.Errorf("UPN list has more than %d entries", MaxUPNs)
		}
		seen[upn] = true
		out = append(out, upn)
	}
	return out, problems, nil
}

// sniffComma picks ';' when the first line has semicolons and no commas
// (spreadsheets in many locales), else ','.
func sniffComma(data []byte) rune {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	if bytes.ContainsRune(line, ';') && !bytes.ContainsRune(line, ',') {
		return ';'
	}
	return ','
}

func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

// headerColumn returns the UPN column if rec is a header row, else -1.
func headerColumn(rec []string) int {
	if firstWithAt(rec) >= 0 {
		return -1 // data, not titles
	}
	for i, f := range rec {
		key := strings.ToLower(strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) || r == '_' || r == '-' {
				return -1
			}
			return r
		}, f))
		for _, h := range headerNames {
			if key == h {
				return i
			}
		}
	}
	return -1
}

func firstWithAt(rec []string) int {
	for i, f := range rec {
		if strings.Contains(f, "@") {
			return i
		}
	}
	return -1
}

// NormalUPN checks and normalises one UPN; see normalUPN.
func NormalUPN(s string) (string, error) {
	u, why := normalUPN(s)
	if why != "" {
		return "", fmt.Errorf("UPN %q: %s", truncateRunes(s, 80), why)
	}
	return u, nil
}

// normalUPN returns the lower-cased UPN or why it is not one. Only what a
// UPN may hold passes: no spaces, controls, quotes, or LDAP/OData specials
// beyond what escaping handles anyway.
func normalUPN(s string) (string, string) {
	u := strings.ToLower(strings.TrimSpace(s))
	local, domain, ok := strings.Cut(u, "@")
	switch {
	case u == "":
		return "", "empty"
	case len(u) > maxUPNLength:
		return "", fmt.Sprintf("longer than %d characters", maxUPNLength)
	case !ok || local == "" || domain == "" || strings.Contains(domain, "@"):
		return "", "not of the form name@domain"
	case !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, ".."):
		return "", "domain part is not a DNS name"
	}
	for _, r := range u {
		switch {
		case r < 0x21 || r == 0x7f || unicode.IsSpace(r) || unicode.IsControl(r):
			return "", "contains spaces or control characters"
		case strings.ContainsRune(`"()*\,;<>[]:%`, r):
			return "", fmt.Sprintf("contains %q", r)
		}
	}
	return u, ""
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}
