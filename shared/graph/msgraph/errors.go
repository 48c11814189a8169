package msgraph

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

// mapError turns whatever the SDK returned into a *graph.Error so that callers
// decide on retries from Status alone.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var ge *graph.Error
	if errors.As(err, &ge) {
		return ge
	}

	var odata *odataerrors.ODataError
	if errors.As(err, &odata) {
		e := &graph.Error{
			Op:         op,
			Status:     odata.GetStatusCode(),
			RetryAfter: retryAfterFromHeaders(odata.GetResponseHeaders()),
		}
		if main := odata.GetErrorEscaped(); main != nil {
			e.Code = deref(main.GetCode())
			e.Message = deref(main.GetMessage())
		}
		return e
	}

	// Token endpoint refused us (wrong secret, unknown client, missing
	// consent...). Not a transport error: retrying does not help, so carry the
	// token endpoint's status, AAD's error code and the first line of its
	// description ("AADSTS7000215: Invalid client secret provided.").
	var authErr *azidentity.AuthenticationFailedError
	if errors.As(err, &authErr) {
		return tokenError(op, authErr)
	}

	// A failed response the SDK could not parse as OData (no body, HTML...).
	var api abs.ApiErrorable
	if errors.As(err, &api) && api.GetStatusCode() != 0 {
		return &graph.Error{
			Op:         op,
			Status:     api.GetStatusCode(),
			Message:    err.Error(),
			RetryAfter: retryAfterFromHeaders(api.GetResponseHeaders()),
		}
	}

	// Everything else happened before a Graph answer: DNS, TLS, timeouts,
	// cancellation (errors.Is(err, context.Canceled) still works via Unwrap).
	return &graph.Error{Op: op, Err: err}
}

func tokenError(op string, authErr *azidentity.AuthenticationFailedError) *graph.Error {
	e := &graph.Error{Op: op, Err: authErr}
	res := authErr.RawResponse
	if res == nil {
		// No HTTP answer: MSAL could not reach or trust the endpoint.
		return e
	}
	e.Status = res.StatusCode
	e.RetryAfter = retryAfter(res.Header.Get("Retry-After"))
	body, err := runtime.Payload(res)
	if err != nil {
		return e
	}
	var aad struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &aad) == nil {
		e.Code = aad.Error
		// The description continues with trace/correlation IDs and a
		// timestamp ("\r\nTrace ID: ..."): noise in logs, useless for branching.
		msg, _, _ := strings.Cut(aad.Description, "\n")
		msg, _, _ = strings.Cut(msg, " Trace ID:")
		e.Message = strings.TrimSpace(msg)
	}
	if e.Code == "" {
		e.Code = "token_request_failed"
		e.Message = http.StatusText(res.StatusCode)
	}
	return e
}

func retryAfterFromHeaders(h *abs.ResponseHeaders) time.Duration {
	if h == nil {
		return 0
	}
	if v := h.Get("Retry-After"); len(v) > 0 {
		return retryAfter(v[0])
	}
	return 0
}

// retryAfter parses Retry-After (see graph.ParseRetryAfter).
func retryAfter(v string) time.Duration { return graph.ParseRetryAfter(v, time.Now()) }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
