package graphsim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Content types Graph answers with.
const (
	odataJSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
	plainJSON = "application/json"
)

// Graph error codes the simulator answers with. Clients branch on codes.
const (
	codeBadRequest         = "Request_BadRequest"
	codeNotFound           = "Request_ResourceNotFound"
	codeUnsupportedQuery   = "Request_UnsupportedQuery"
	codeInvalidToken       = "InvalidAuthenticationToken"
	codeAuthDenied         = "Authorization_RequestDenied"
	codeTooManyRequests    = "TooManyRequests"
	codeODataBadRequest    = "BadRequest" // OData parsing and $batch validation
	codeFailedDependency   = "FailedDependency"
	codeServiceUnavailable = "serviceNotAvailable"
	codeMethodNotAllowed   = "Request_BadRequest"
	codeUnsupportedMedia   = "UnsupportedMediaType"
)

// reply is one Graph answer, built by handlers and written either to the
// wire (standalone requests) or into a $batch responses item. Header keys
// keep their exact spelling because batch items show them verbatim.
type reply struct {
	status int
	header http.Header
	body   []byte // JSON, or nil for no body
}

func (r *reply) setHeader(k, v string) {
	if r.header == nil {
		r.header = http.Header{}
	}
	r.header[k] = []string{v}
}

// jsonReply marshals v as an OData JSON body.
func jsonReply(status int, v any) reply {
	b, err := json.Marshal(v)
	if err != nil {
		return errorReply(http.StatusInternalServerError, "InternalServerError", fmt.Sprintf("marshal response: %v", err))
	}
	r := reply{status: status, body: b}
	r.setHeader("Content-Type", odataJSON)
	r.setHeader("OData-Version", "4.0")
	return r
}

func emptyReply(status int) reply { return reply{status: status} }

// errorReply builds Graph's error envelope. innerError is filled in by
// finish, which knows the request IDs.
func errorReply(status int, code, message string) reply {
	b, _ := json.Marshal(errorEnvelope{Error: graphError{Code: code, Message: message}})
	r := reply{status: status, body: b}
	r.setHeader("Content-Type", plainJSON)
	return r
}

type errorEnvelope struct {
	Error graphError `json:"error"`
}

type graphError struct {
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	InnerError *innerError `json:"innerError,omitempty"`
}

type innerError struct {
	Date            string `json:"date"`
	RequestID       string `json:"request-id"`
	ClientRequestID string `json:"client-request-id"`
}

// withInnerError stamps date and request IDs into an error body, as Graph
// does on every error.
func withInnerError(body []byte, requestID, clientRequestID string, now time.Time) []byte {
	var env errorEnvelope
	if json.Unmarshal(body, &env) != nil || env.Error.Code == "" && env.Error.Message == "" {
		return body
	}
	env.Error.InnerError = &innerError{
		Date:            now.UTC().Format("2006-01-02T15:04:05"),
		RequestID:       requestID,
		ClientRequestID: clientRequestID,
	}
	b, err := json.Marshal(env)
	if err != nil {
		return body
	}
	return b
}

func notFound(id string) reply {
	return errorReply(http.StatusNotFound, codeNotFound,
		fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", id))
}

func badRequest(msg string) reply { return errorReply(http.StatusBadRequest, codeBadRequest, msg) }

// newGUID returns a random (version 4) GUID, the shape of Entra object IDs.
func newGUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("graphsim: crypto/rand failed: %v", err)) // the OS RNG does not fail
	}
	return b
}
