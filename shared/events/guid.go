package events

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// AD stores objectGUID as the 16 bytes of a Windows GUID struct: the first three
// fields (4, 2 and 2 bytes) little-endian, the last 8 bytes as they are. The
// canonical string reads the fields big-endian, so those three are reversed.
// Entra's onPremisesImmutableId is the base64 of the raw bytes, not of the string.

// GUIDString formats the 16 raw bytes of an objectGUID as the canonical lower-case
// string (e.g. 6cd132b9-6aa9-49ec-a035-ac12a4efd979).
func GUIDString(raw []byte) (string, error) {
	if len(raw) != 16 {
		return "", fmt.Errorf("objectGUID has %d bytes, want 16", len(raw))
	}
	b := []byte{
		raw[3], raw[2], raw[1], raw[0],
		raw[5], raw[4],
		raw[7], raw[6],
	}
	h := hex.EncodeToString(append(b, raw[8:]...))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// ParseGUID is the inverse of GUIDString: it returns the raw objectGUID bytes
// of a canonical GUID string (braces and upper case are accepted).
func ParseGUID(s string) ([]byte, error) {
	t := strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return nil, fmt.Errorf("parsing GUID %q: not in 8-4-4-4-12 form", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(t, "-", ""))
	if err != nil {
		return nil, fmt.Errorf("parsing GUID %q: %w", s, err)
	}
	return []byte{
		b[3], b[2], b[1], b[0],
		b[5], b[4],
		b[7], b[6],
		b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
	}, nil
}

// ImmutableID is Entra Connect's default sourceAnchor for a user: the base64
// (standard alphabet, padded) of the raw objectGUID bytes.
func ImmutableID(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }
