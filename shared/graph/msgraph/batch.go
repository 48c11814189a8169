package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/metrics"
)

// MaxBatch is Graph's limit of requests in one $batch.
const MaxBatch = graph.MaxBatch

const opBatch = "POST /$batch"

// BatchRequest and BatchResponse live in shared/graph (graph.Batcher), so
// that callers need not link this package.
type (
	BatchRequest  = graph.BatchRequest
	BatchResponse = graph.BatchResponse
)

var _ graph.Batcher = (*Client)(nil)

// Batch sends up to MaxBatch requests in one POST /$batch and returns one
// response per request, in request order. The error is for the batch as a
// whole (invalid input, transport, or a non-2xx answer to the POST itself, as
// a *graph.Error); item failures are in the responses. Items are not retried:
// resend throttled ones after the largest RetryAfter.
//
// A raw $batch through the same adapter (auth, CA, middleware) is used
// instead of msgraph-sdk-go-core's batch model, whose item deserialisation
// drops numbers and panics on non-string headers, and which sends
// "body": null for GETs.
func (c *Client) Batch(ctx context.Context, reqs []BatchRequest) ([]BatchResponse, error) {
	payload, err := encodeBatch(reqs)
	if err != nil || payload == nil {
		return nil, err
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.POST
	ri.UrlTemplate = "{+baseurl}/$batch"
	ri.PathParameters["baseurl"] = c.adapter.GetBaseUrl()
	ri.Headers.Add("Accept", "application/json")
	ri.SetStreamContentAndContentType(payload, "application/json")

	raw, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	})
	if err != nil {
		return nil, mapError(opBatch, err)
	}
	body, _ := raw.([]byte)
	return decodeBatch(reqs, body)
}

type batchItemOut struct {
	ID      string            `json:"id"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    any               `json:"body,omitempty"`
}

func encodeBatch(reqs []BatchRequest) ([]byte, error) {
	switch {
	case len(reqs) == 0:
		return nil, nil
	case len(reqs) > MaxBatch:
		return nil, fmt.Errorf("graph %s: %d requests, at most %d allowed", opBatch, len(reqs), MaxBatch)
	}
	items := make([]batchItemOut, 0, len(reqs))
	seen := make(map[string]bool, len(reqs))
	for i, r := range reqs {
		switch {
		case r.ID == "":
			return nil, fmt.Errorf("graph %s: request %d: empty ID", opBatch, i)
		case seen[r.ID]:
			return nil, fmt.Errorf("graph %s: duplicate request ID %q", opBatch, r.ID)
		case r.Method == "":
			return nil, fmt.Errorf("graph %s: request %q: empty method", opBatch, r.ID)
		case !strings.HasPrefix(r.URL, "/"):
			return nil, fmt.Errorf("graph %s: request %q: URL must be relative and start with / (got %q)", opBatch, r.ID, r.URL)
		}
		seen[r.ID] = true
		it := batchItemOut{ID: r.ID, Method: strings.ToUpper(r.Method), URL: r.URL}
		if r.Body != nil {
			// Graph requires a Content-Type for every item with a body.
			it.Body = r.Body
			it.Headers = map[string]string{"Content-Type": "application/json"}
		}
		items = append(items, it)
	}
	b, err := json.Marshal(map[string]any{"requests": items})
	if err != nil {
		return nil, fmt.Errorf("graph %s: encode: %w", opBatch, err)
	}
	return b, nil
}

type batchItemIn struct {
	ID      string          `json:"id"`
	Status  int             `json:"status"`
	Headers map[string]any  `json:"headers"`
	Body    json.RawMessage `json:"body"`
}

func decodeBatch(reqs []BatchRequest, body []byte) ([]BatchResponse, error) {
	var env struct {
		Responses []batchItemIn `json:"responses"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, &graph.Error{Op: opBatch, Status: http.StatusOK, Message: "undecodable $batch response: " + err.Error()}
	}
	byID := make(map[string]batchItemIn, len(env.Responses))
	for _, it := range env.Responses {
		byID[it.ID] = it // responses may come in any order
	}
	out := make([]BatchResponse, len(reqs))
	for i, r := range reqs {
		op := "$batch " + strings.ToUpper(r.Method) + " " + r.URL
		it, ok := byID[r.ID]
		if !ok {
			out[i] = BatchResponse{ID: r.ID, Err: &graph.Error{Op: op, Message: "no response for this item"}}
			continue
		}
		out[i] = BatchResponse{ID: r.ID, Status: it.Status, RetryAfter: retryAfter(header(it.Headers, "Retry-After")),
			Headers: lowerHeaders(it.Headers)}
		if len(it.Body) > 0 && string(it.Body) != "null" {
			out[i].Body = it.Body
		}
		if it.Status >= 400 {
			out[i].Err = itemError(op, it, out[i].RetryAfter)
		}
		if it.Status == http.StatusTooManyRequests {
			// The transport saw the envelope's 200: an item's 429 is counted here.
			metrics.GraphThrottled.Inc()
		}
	}
	return out, nil
}

func itemError(op string, it batchItemIn, ra time.Duration) *graph.Error {
	e := &graph.Error{Op: op, Status: it.Status, RetryAfter: ra}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if len(it.Body) > 0 && json.Unmarshal(it.Body, &env) == nil {
		e.Code, e.Message = env.Error.Code, env.Error.Message
	}
	return e
}

// header looks a batch item header up case-insensitively: Graph writes them
// in varying case ("Retry-After", "retry-after").
func header(h map[string]any, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v) // strings, but tolerate a bare number
		}
	}
	return ""
}

// lowerHeaders turns an item's headers into a map with lower-cased names.
func lowerHeaders(h map[string]any) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[strings.ToLower(k)] = fmt.Sprint(v)
	}
	return out
}
