package campaign_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pwsync/pwsync/shared/graph"
)

// simClient is a small raw-HTTP graph.Batcher and graph.Directory for the
// simulator, so that these tests need not link msgraph-sdk-go (the real
// implementation, *msgraph.Client, has its own tests against the simulator).
type simClient struct {
	hc                      *http.Client
	authority, tenant, base string
	clientID, secret        string
	mu                      sync.Mutex
	token                   string
}

func (c *simClient) bearer(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" {
		return c.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.clientID}, "client_secret": {c.secret},
		"scope": {"https://graph.microsoft.com/.default"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.authority+c.tenant+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("token: status %d: %v", resp.StatusCode, err)
	}
	c.token = out.AccessToken
	return c.token, nil
}

func (c *simClient) do(ctx context.Context, method, u string, body any) (int, http.Header, []byte, error) {
	tok, err := c.bearer(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, &graph.Error{Op: method + " " + u, Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw, err
}

func (c *simClient) Batch(ctx context.Context, reqs []graph.BatchRequest) ([]graph.BatchResponse, error) {
	type itemOut struct {
		ID      string            `json:"id"`
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers,omitempty"`
		Body    any               `json:"body,omitempty"`
	}
	items := make([]itemOut, len(reqs))
	for i, r := range reqs {
		items[i] = itemOut{ID: r.ID, Method: r.Method, URL: r.URL, Body: r.Body}
		if r.Body != nil {
			items[i].Headers = map[string]string{"Content-Type": "application/json"}
		}
	}
	status, hdr, raw, err := c.do(ctx, http.MethodPost, c.base+"/$batch", map[string]any{"requests": items})
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		ra, _ := strconv.Atoi(hdr.Get("Retry-After"))
		return nil, &graph.Error{Op: "POST /$batch", Status: status, RetryAfter: time.Duration(ra) * time.Second}
	}
	var env struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, err
	}
	out := make([]graph.BatchResponse, len(reqs))
	for i, r := range reqs {
		out[i] = graph.BatchResponse{ID: r.ID, Err: &graph.Error{Op: "$batch", Message: "no response"}}
		for _, it := range env.Responses {
			if it.ID != r.ID {
				continue
			}
			h := map[string]string{}
			for k, v := range it.Headers {
				h[strings.ToLower(k)] = v
			}
			ra, _ := strconv.Atoi(h["retry-after"])
			out[i] = graph.BatchResponse{ID: r.ID, Status: it.Status, Headers: h, Body: it.Body, RetryAfter: time.Duration(ra) * time.Second}
			if it.Status >= 400 {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				_ = json.Unmarshal(it.Body, &e)
				out[i].Err = &graph.Error{Op: "$batch " + r.Method + " " + r.URL, Status: it.Status, Code: e.Error.Code,
					Message: e.Error.Message, RetryAfter: out[i].RetryAfter}
			}
		}
	}
	return out, nil
}

func (c *simClient) pages(ctx context.Context, next string) ([]graph.User, error) {
	var out []graph.User
	for next != "" {
		status, _, raw, err := c.do(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, &graph.Error{Op: "GET " + next, Status: status, Message: string(raw)}
		}
		var env struct {
			Value    []graph.UserJSON `json:"value"`
			NextLink string           `json:"@odata.nextLink"`
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, err
		}
		for _, u := range env.Value {
			out = append(out, u.User())
		}
		next = env.NextLink
	}
	return out, nil
}

func (c *simClient) TransitiveGroupMembers(ctx context.Context, groupID string) ([]graph.User, error) {
	return c.pages(ctx, c.base+"/groups/"+url.PathEscape(groupID)+"/transitiveMembers/microsoft.graph.user?$select="+graph.UserSelect+"&$top=999")
}

func (c *simClient) ListUsers(ctx context.Context) ([]graph.User, error) {
	return c.pages(ctx, c.base+"/users?$select="+graph.UserSelect+"&$top=999")
}
