package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

var _ graph.RiskPolicyReader = (*Client)(nil)

const opRiskPolicy = "GET /beta/identityProtection/policy"

// IdentityProtectionPolicy implements graph.RiskPolicyReader. Graph has
// the setting in beta only, so the request goes to the beta endpoint next
// to the configured v1.0 one (Microsoft's cloud, a national cloud or the
// simulator alike).
func (c *Client) IdentityProtectionPolicy(ctx context.Context) (graph.IdentityProtectionPolicy, error) {
	var p graph.IdentityProtectionPolicy
	beta, err := betaBaseURL(c.baseURL)
	if err != nil {
		return p, fmt.Errorf("graph %s: %w", opRiskPolicy, err)
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.GET
	ri.UrlTemplate = "{+url}"
	ri.PathParameters["url"] = beta + "/identityProtection/policy"
	ri.Headers.Add("Accept", "application/json")
	raw, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	})
	if err != nil {
		return p, mapError(opRiskPolicy, err)
	}
	body, _ := raw.([]byte)
	if err := json.Unmarshal(body, &p); err != nil {
		return p, &graph.Error{Op: opRiskPolicy, Status: http.StatusOK, Message: "undecodable answer: " + err.Error()}
	}
	return p, nil
}

// betaBaseURL turns the configured ".../v1.0" base into ".../beta"; any
// other base (a proxy's own path) gives no safe guess.
func betaBaseURL(base string) (string, error) {
	root, ok := strings.CutSuffix(strings.TrimRight(base, "/"), "/v1.0")
	if !ok {
		return "", fmt.Errorf("graph.base_url %s does not end in /v1.0, so the beta endpoint is unknown", base)
	}
	return root + "/beta", nil
}
