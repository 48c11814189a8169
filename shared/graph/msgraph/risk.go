package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
)

var _ graph.RiskReader = (*Client)(nil)

const (
	opRiskyUsers     = "GET /identityProtection/riskyUsers"
	opRiskyUser      = "GET /identityProtection/riskyUsers/{id}"
	opRiskDetections = "GET /identityProtection/riskDetections"
	opDismissRisk    = "POST /identityProtection/riskyUsers/dismiss"
	opConfirmRisk    = "POST /identityProtection/riskyUsers/confirmCompromised"
	riskPageSize     = 500
)

// graphTimeLiteral formats a $filter DateTimeOffset literal (unquoted).
func graphTimeLiteral(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// RiskyUsersSince implements graph.RiskReader.
func (c *Client) RiskyUsersSince(ctx context.Context, since time.Time) ([]events.RiskyUser, error) {
	q := url.Values{"$top": {fmt.Sprint(riskPageSize)}}
	if !since.IsZero() {
		q.Set("$filter", "riskLastUpdatedDateTime ge "+graphTimeLiteral(since))
	}
	var out []events.RiskyUser
	err := c.rawPages(ctx, opRiskyUsers, c.baseURL+"/identityProtection/riskyUsers?"+q.Encode(), func(raw json.RawMessage) error {
		var page []events.RiskyUser
		if err := json.Unmarshal(raw, &page); err != nil {
			return err
		}
		out = append(out, page...)
		return nil
	})
	return out, err
}

// RiskyUser implements graph.RiskReader.
func (c *Client) RiskyUser(ctx context.Context, userID string) (*events.RiskyUser, error) {
	var u events.RiskyUser
	if err := c.tenantGet(ctx, opRiskyUser, "/identityProtection/riskyUsers/"+url.PathEscape(userID), &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// RiskDetectionsSince implements graph.RiskReader.
func (c *Client) RiskDetectionsSince(ctx context.Context, since time.Time, eventTypes []string) ([]events.RiskDetection, error) {
	var clauses []string
	if !since.IsZero() {
		clauses = append(clauses, "detectedDateTime ge "+graphTimeLiteral(since))
	}
	q := url.Values{"$top": {fmt.Sprint(riskPageSize)}}
	if len(clauses) > 0 {
		q.Set("$filter", strings.Join(clauses, " and "))
	}
	want := map[string]bool{}
	for _, t := range eventTypes {
		want[strings.ToLower(t)] = true
	}
	var out []events.RiskDetection
	err := c.rawPages(ctx, opRiskDetections, c.baseURL+"/identityProtection/riskDetections?"+q.Encode(), func(raw json.RawMessage) error {
		var page []events.RiskDetection
		if err := json.Unmarshal(raw, &page); err != nil {
			return err
		}
		for _, d := range page {
			// Filtered here rather than with "or" clauses in $filter: one
			// query shape whatever the list holds.
			if len(want) == 0 || want[strings.ToLower(d.EventType)] {
				out = append(out, d)
			}
		}
		return nil
	})
	return out, err
}

// DismissRisk implements graph.RiskReader.
func (c *Client) DismissRisk(ctx context.Context, userIDs []string) error {
	return c.riskUsersAction(ctx, opDismissRisk, "dismiss", userIDs)
}

// ConfirmCompromised implements graph.RiskReader.
func (c *Client) ConfirmCompromised(ctx context.Context, userIDs []string) error {
	return c.riskUsersAction(ctx, opConfirmRisk, "confirmCompromised", userIDs)
}

// riskUsersAction POSTs {"userIds": [...]} to a riskyUsers action, which
// answers 204 No Content.
func (c *Client) riskUsersAction(ctx context.Context, op, action string, userIDs []string) error {
	if len(userIDs) == 0 {
		return nil
	}
	payload, err := json.Marshal(map[string][]string{"userIds": userIDs})
	if err != nil {
		return fmt.Errorf("graph %s: encode: %w", op, err)
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.POST
	ri.UrlTemplate = "{+baseurl}/identityProtection/riskyUsers/" + action
	ri.PathParameters["baseurl"] = c.adapter.GetBaseUrl()
	ri.Headers.Add("Accept", "application/json")
	ri.SetStreamContentAndContentType(payload, "application/json")
	return mapError(op, c.adapter.SendNoContent(ctx, ri, abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	}))
}

// rawPages follows @odata.nextLink from first, handing each page's value
// array to take.
func (c *Client) rawPages(ctx context.Context, op, first string, take func(json.RawMessage) error) error {
	next := first
	for page := 0; next != ""; page++ {
		if page == maxPages {
			return fmt.Errorf("graph %s: more than %d pages", op, maxPages)
		}
		ri := abs.NewRequestInformation()
		ri.Method = abs.GET
		ri.UrlTemplate = "{+url}"
		ri.PathParameters["url"] = next
		ri.Headers.Add("Accept", "application/json")
		raw, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", abs.ErrorMappings{
			"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
		})
		if err != nil {
			return mapError(op, err)
		}
		body, _ := raw.([]byte)
		var env struct {
			Value    json.RawMessage `json:"value"`
			NextLink string          `json:"@odata.nextLink"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return &graph.Error{Op: op, Status: http.StatusOK, Message: "undecodable page: " + err.Error()}
		}
		if len(env.Value) > 0 {
			if err := take(env.Value); err != nil {
				return &graph.Error{Op: op, Status: http.StatusOK, Message: "undecodable page: " + err.Error()}
			}
		}
		next = env.NextLink
	}
	return nil
}
