package msgraph

import (
	"context"
	"encoding/json"
	"net/http"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

var _ graph.TenantPolicy = (*Client)(nil)

const (
	opDomains = "GET /domains"
	opOnPrem  = "GET /directory/onPremisesSynchronization"
)

// Domains implements graph.TenantPolicy.
func (c *Client) Domains(ctx context.Context) ([]graph.Domain, error) {
	var env struct {
		Value []graph.Domain `json:"value"`
	}
	if err := c.tenantGet(ctx, opDomains, "/domains", &env); err != nil {
		return nil, err
	}
	return env.Value, nil
}

// OnPremisesSync implements graph.TenantPolicy.
func (c *Client) OnPremisesSync(ctx context.Context) (*graph.OnPremisesSync, error) {
	var env struct {
		Value []graph.OnPremisesSync `json:"value"`
	}
	if err := c.tenantGet(ctx, opOnPrem, "/directory/onPremisesSynchronization", &env); err != nil {
		return nil, err
	}
	if len(env.Value) == 0 {
		return nil, nil
	}
	return &env.Value[0], nil
}

// tenantGet GETs a path below the base URL through the SDK's adapter (auth,
// CA, middleware) and decodes the JSON body into v.
func (c *Client) tenantGet(ctx context.Context, op, path string, v any) error {
	ri := abs.NewRequestInformation()
	ri.Method = abs.GET
	ri.UrlTemplate = "{+baseurl}" + path
	ri.PathParameters["baseurl"] = c.adapter.GetBaseUrl()
	ri.Headers.Add("Accept", "application/json")
	raw, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	})
	if err != nil {
		return mapError(op, err)
	}
	body, _ := raw.([]byte)
	if err := json.Unmarshal(body, v); err != nil {
		return &graph.Error{Op: op, Status: http.StatusOK, Message: "undecodable answer: " + err.Error()}
	}
	return nil
}
