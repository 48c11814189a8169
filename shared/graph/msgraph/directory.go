package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

const (
	opTransitive = "GET /groups/{id}/transitiveMembers/microsoft.graph.user"
	opListUsers  = "GET /users"
	// maxPages bounds a listing: 999 per page, so 2 million users.
	maxPages = 2000
)

var _ graph.Directory = (*Client)(nil)

// TransitiveGroupMembers implements graph.Directory. The cast segment keeps
// only users (not devices, contacts or the nested groups themselves).
func (c *Client) TransitiveGroupMembers(ctx context.Context, groupID string) ([]graph.User, error) {
	if groupID == "" {
		return nil, &graph.Error{Op: opTransitive, Status: http.StatusBadRequest, Message: "empty group id"}
	}
	first := c.baseURL + "/groups/" + url.PathEscape(groupID) + "/transitiveMembers/microsoft.graph.user?" + listQuery()
	return c.listPages(ctx, opTransitive, first)
}

// ListUsers implements graph.Directory.
func (c *Client) ListUsers(ctx context.Context) ([]graph.User, error) {
	return c.listPages(ctx, opListUsers, c.baseURL+"/users?"+listQuery())
}

func listQuery() string { return "$select=" + graph.UserSelect + "&$top=999" }

// listPages follows @odata.nextLink from first, through the SDK's adapter
// (auth, CA, middleware), decoding users with the shape of $select.
func (c *Client) listPages(ctx context.Context, op, first string) ([]graph.User, error) {
	var out []graph.User
	next := first
	for page := 0; next != ""; page++ {
		if page == maxPages {
			return nil, fmt.Errorf("graph %s: more than %d pages", op, maxPages)
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
			return nil, mapError(op, err)
		}
		body, _ := raw.([]byte)
		var env struct {
			Value    []graph.UserJSON `json:"value"`
			NextLink string           `json:"@odata.nextLink"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return nil, &graph.Error{Op: op, Status: http.StatusOK, Message: "undecodable page: " + err.Error()}
		}
		for _, u := range env.Value {
			out = append(out, u.User())
		}
		next = env.NextLink
	}
	return out, nil
}
