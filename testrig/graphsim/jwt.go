package graphsim

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515)
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// accessClaims are the claims of an app-only access token for Graph, shaped
// like Entra ID's v1.0 tokens for graph.microsoft.com.
type accessClaims struct {
	Aud      string   `json:"aud"`
	Iss      string   `json:"iss"`
	Iat      int64    `json:"iat"`
	Nbf      int64    `json:"nbf"`
	Exp      int64    `json:"exp"`
	AppID    string   `json:"appid"`
	AppIDACR string   `json:"appidacr"` // "1" secret, "2" certificate
	IDType   string   `json:"idtyp"`
	Oid      string   `json:"oid"`
	Sub      string   `json:"sub"`
	Tid      string   `json:"tid"`
	Roles    []string `json:"roles"`
	Uti      string   `json:"uti"`
	Ver      string   `json:"ver"`
}

// Audiences Graph accepts in access tokens.
const (
	graphResource = "https://graph.microsoft.com"
	graphAppID    = "00000003-0000-0000-c000-000000000000"
)

var b64 = base64.RawURLEncoding

// signHS256 returns a compact JWT signed with key.
func signHS256(key []byte, claims any) (string, error) {
	header, err := json.Marshal(map[string]string{"typ": "JWT", "alg": "HS256", "kid": "graphsim"})
	if err != nil {
		return "", fmt.Errorf("marshal JWT header: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("marshal JWT claims: %w", err)
	}
	signing := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + b64.EncodeToString(mac.Sum(nil)), nil
}

// jwtParts is a decoded, not yet verified, compact JWT.
type jwtParts struct {
	header    map[string]any
	payload   []byte
	signing   string // "header.payload" as sent: what the signature covers
	signature []byte
}

func parseJWT(token string) (jwtParts, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return jwtParts{}, errors.New("JWT is not well formed: want three dot-separated parts")
	}
	h, err := b64.DecodeString(parts[0])
	if err != nil {
		return jwtParts{}, fmt.Errorf("JWT header: %w", err)
	}
	var header map[string]any
	if err := json.Unmarshal(h, &header); err != nil {
		return jwtParts{}, fmt.Errorf("JWT header: %w", err)
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return jwtParts{}, fmt.Errorf("JWT payload: %w", err)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return jwtParts{}, fmt.Errorf("JWT signature: %w", err)
	}
	return jwtParts{header: header, payload: payload, signing: parts[0] + "." + parts[1], signature: sig}, nil
}

func (j jwtParts) headerString(k string) string {
	v, _ := j.header[k].(string)
	return v
}

// verifyHS256 checks an access token this server issued.
func verifyHS256(key []byte, token string) (accessClaims, error) {
	j, err := parseJWT(token)
	if err != nil {
		return accessClaims{}, err
	}
	if j.headerString("alg") != "HS256" {
		return accessClaims{}, fmt.Errorf("unexpected signing algorithm %q", j.headerString("alg"))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(j.signing))
	if !hmac.Equal(mac.Sum(nil), j.signature) {
		return accessClaims{}, errors.New("signature validation failed")
	}
	var c accessClaims
	if err := json.Unmarshal(j.payload, &c); err != nil {
		return accessClaims{}, fmt.Errorf("JWT claims: %w", err)
	}
	return c, nil
}

// assertionCert picks the registered certificate a client assertion names
// by thumbprint (x5t#S256 from MSAL, x5t from older clients); with neither,
// every registered certificate is a candidate, as each may verify it.
func assertionCert(j jwtParts, certs []*x509.Certificate) ([]*x509.Certificate, string) {
	want, sum := j.headerString("x5t#S256"), func(c *x509.Certificate) []byte { h := sha256.Sum256(c.Raw); return h[:] }
	if want == "" {
		want, sum = j.headerString("x5t"), func(c *x509.Certificate) []byte { h := sha1.Sum(c.Raw); return h[:] } //nolint:gosec
	}
	if want == "" {
		return certs, ""
	}
	got, err := decodeThumbprint(want)
	if err != nil {
		return nil, want
	}
	for _, c := range certs {
		if hmac.Equal(sum(c), got) {
			return []*x509.Certificate{c}, ""
		}
	}
	return nil, strings.ToUpper(hex.EncodeToString(got))
}

// decodeThumbprint accepts standard or URL-safe base64, padded or not:
// MSAL uses standard base64 although RFC 7515 says base64url.
func decodeThumbprint(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("thumbprint %q is not base64", s)
}

// verifyRSA checks an RS256 or PS256 signature with one of the candidates.
func verifyRSA(j jwtParts, candidates []*x509.Certificate) error {
	alg := j.headerString("alg")
	if alg != "RS256" && alg != "PS256" {
		return fmt.Errorf("unsupported client assertion algorithm %q", alg)
	}
	digest := sha256.Sum256([]byte(j.signing))
	for _, c := range candidates {
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok {
			continue
		}
		var err error
		if alg == "RS256" {
			err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], j.signature)
		} else {
			err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], j.signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err == nil {
			return nil
		}
	}
	return errors.New("signature does not verify with any registered certificate")
}
