package graph

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// MaxBatch is Graph's limit of requests in one $batch.
const MaxBatch = 20

// BatchRequest is one request inside a $batch.
type BatchRequest struct {
	ID     string // unique within the batch
	Method string // GET, PATCH, POST, DELETE...
	URL    string // relative to the base URL, e.g. "/users/{id}"
	Body   any    // marshalled as JSON; nil for none
}

// BatchResponse is the answer to the BatchRequest with the same ID.
type BatchResponse struct {
	ID         string
	Status     int           // the item's HTTP status; 0 if Graph returned no answer for it
	RetryAfter time.Duration // the item's Retry-After, if any (throttling is per item)
	// Headers are the item's own headers, names lower-cased
	// (x-ms-throttle-limit-percentage, x-ms-resource-unit...).
	Headers map[string]string
	Body    json.RawMessage // the item's body, if any (GETs)
	Err     *Error          // nil on 2xx
}

// ThrottlePercentage is x-ms-throttle-limit-percentage: the share of the
// limit used, sent by Graph only above 0.8; 0 when absent.
func (r BatchResponse) ThrottlePercentage() float64 {
	v, err := strconv.ParseFloat(strings.TrimSpace(r.Headers["x-ms-throttle-limit-percentage"]), 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// Batcher sends JSON batches (POST /$batch). It is apart from Client so that
// the fakes of Client need not grow; *msgraph.Client implements it.
type Batcher interface {
	// Batch sends up to MaxBatch requests and returns one response per
	// request, in request order. The error is for the batch as a whole;
	// item failures are in the responses, and items are never retried.
	Batch(ctx context.Context, reqs []BatchRequest) ([]BatchResponse, error)
}

// Directory reads sets of users, for campaign selectors. *msgraph.Client
// implements it.
type Directory interface {
	// TransitiveGroupMembers returns the users that are members of the
	// group directly or through nested groups (other member types are
	// skipped), all pages.
	TransitiveGroupMembers(ctx context.Context, groupID string) ([]User, error)
	// ListUsers returns every user of the tenant, all pages.
	ListUsers(ctx context.Context) ([]User, error)
}
