package adminapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TokenPrefix marks pwsync admin tokens so that secret scanners can find
// leaked ones.
const TokenPrefix = "pwsa_"

// Token is one configured admin token: only its hash is stored.
//
// SHA-256 (not bcrypt/argon2) is enough because the tokens are 256-bit random
// values, not passwords: slow hashes exist to make guessing low-entropy
// secrets expensive, and nobody can enumerate 2^256 candidates however fast
// the hash is. Preimage resistance is all a leaked config must give, and a
// fast hash keeps every request cheap.
type Token struct {
	Name      string
	SHA256    string // hex of sha256(token)
	Roles     []Role
	ExpiresAt time.Time // zero: never
}

// NewToken returns a fresh random token and its hash for the config.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generating token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken is the value stored in admin.tokens[].sha256.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Authentication failures. Their texts are what the caller sees.
var (
	errNoToken      = errors.New("missing bearer token")
	errMalformed    = errors.New("malformed Authorization header: want \"Bearer <token>\"")
	errUnknownToken = errors.New("invalid token")
	errExpiredToken = errors.New("token expired")
)

type tokenSet struct {
	tokens []Token
	hashes [][]byte // decoded Token.SHA256, same order
}

func newTokenSet(tokens []Token) (tokenSet, error) {
	ts := tokenSet{tokens: tokens}
	names := map[string]bool{}
	for i, t := range tokens {
		h, err := hex.DecodeString(t.SHA256)
		if err != nil || len(h) != sha256.Size {
			return tokenSet{}, fmt.Errorf("token %d (%s): sha256 must be 64 hex characters", i, t.Name)
		}
		if t.Name == "" || names[t.Name] {
			return tokenSet{}, fmt.Errorf("token %d: name must be set and unique (got %q)", i, t.Name)
		}
		if len(t.Roles) == 0 {
			return tokenSet{}, fmt.Errorf("token %s: no roles", t.Name)
		}
		names[t.Name] = true
		ts.hashes = append(ts.hashes, h)
	}
	return ts, nil
}

// authenticate maps an Authorization header to a principal. Every configured
// hash is compared in constant time, without an early exit, so timing tells
// nothing about which token (if any) came close.
func (ts tokenSet) authenticate(header string, now time.Time) (Principal, error) {
	if header == "" {
		return Principal{}, errNoToken
	}
	scheme, tok, ok := strings.Cut(header, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
		return Principal{}, errMalformed
	}
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i, h := range ts.hashes {
		if subtle.ConstantTimeCompare(sum[:], h) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, errUnknownToken
	}
	t := ts.tokens[match]
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		return Principal{Name: t.Name}, errExpiredToken
	}
	return Principal{Name: t.Name, Roles: t.Roles}, nil
}

// ConfigSnippet is the admin.tokens entry for a new token (no secret in it).
func ConfigSnippet(name, hash string, roles []Role, expires time.Time) string {
	rs := make([]string, len(roles))
	for i, r := range roles {
		rs[i] = string(r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "admin:\n  tokens:\n    - name: %s\n      sha256: %s\n      roles: [%s]\n", name, hash, strings.Join(rs, ", "))
	if !expires.IsZero() {
		fmt.Fprintf(&b, "      expires_at: %s\n", expires.UTC().Format(time.RFC3339))
	}
	return b.String()
}
