package msgraph

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Token acquires an app-only token (as every Graph call would) and returns the
// application roles it grants and when it expires, for `pwsync doctor`.
// The JWT is decoded, not verified: it only informs a human, and Graph is the
// one that verifies it. The token itself never leaves this function.
func (c *Client) Token(ctx context.Context) (roles []string, expires time.Time, err error) {
	tok, err := c.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: c.scopes})
	if err != nil {
		return nil, time.Time{}, mapError("acquire token", err)
	}
	roles, err = jwtRoles(tok.Token)
	if err != nil {
		return nil, tok.ExpiresOn, fmt.Errorf("graph: decode access token: %w", err)
	}
	return roles, tok.ExpiresOn, nil
}

func jwtRoles(jwt string) ([]string, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT (want 3 dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	var claims struct {
		Roles []string `json:"roles"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return claims.Roles, nil
}
