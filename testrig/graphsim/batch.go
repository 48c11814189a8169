package graphsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBatchItems is Graph's JSON batching limit.
const maxBatchItems = 20

type batchRequest struct {
	Requests []batchItem `json:"requests"`
}

type batchItem struct {
	ID        string            `json:"id"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body"`
	DependsOn []string          `json:"dependsOn"`
}

type batchResponseItem struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
}

// POST /$batch. Items run in request order (dependsOn may only name earlier
// items), each through the same graphCall as a standalone request, so
// permissions, throttling and faults apply per item. The responses come
// back shuffled ("responses may be out of order", JSON batching) unless
// Options.BatchInOrder.
func (s *Server) serveBatch(c *call) reply {
	if c.method != http.MethodPost {
		return errorReply(http.StatusMethodNotAllowed, codeMethodNotAllowed, "Specified HTTP method is not allowed for the request target.")
	}
	var br batchRequest
	dec := json.NewDecoder(bytes.NewReader(c.body))
	if err := dec.Decode(&br); err != nil {
		return errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Invalid batch payload format: %v.", err))
	}
	if rep := validateBatch(br.Requests); rep != nil {
		return *rep
	}

	statuses := map[string]int{} // by lower-cased id: ids are case-insensitive
	responses := make([]batchResponseItem, 0, len(br.Requests))
	for _, it := range br.Requests {
		rep := s.batchItem(c, it, statuses)
		statuses[strings.ToLower(it.ID)] = rep.status
		responses = append(responses, itemResponse(it.ID, rep))
	}
	if !s.opts.BatchInOrder {
		outOfOrder(responses)
	}
	b, err := json.Marshal(map[string]any{"responses": responses})
	if err != nil {
		return errorReply(http.StatusInternalServerError, "InternalServerError", fmt.Sprintf("marshal batch response: %v", err))
	}
	r := reply{status: http.StatusOK, body: b}
	r.setHeader("Content-Type", plainJSON)
	r.setHeader("OData-Version", "4.0")
	return r
}

// validateBatch applies Graph's batch-level checks: any failure refuses the
// whole batch with 400 and runs nothing.
func validateBatch(items []batchItem) *reply {
	bad := func(format string, args ...any) *reply {
		r := errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf(format, args...))
		return &r
	}
	switch {
	case len(items) == 0:
		return bad("Invalid batch payload format: 'requests' must hold at least one request.")
	case len(items) > maxBatchItems:
		return bad("The number of requests in the batch (%d) exceeds the limit of %d.", len(items), maxBatchItems)
	}
	seen := map[string]bool{}
	for _, it := range items {
		id := strings.ToLower(it.ID)
		switch {
		case it.ID == "":
			return bad("Invalid batch payload format: every request needs an 'id'.")
		case seen[id]:
			return bad("Invalid batch payload format: request id '%s' is not unique.", it.ID)
		case it.Method == "":
			return bad("Invalid batch payload format: request id '%s' has no 'method'.", it.ID)
		case it.URL == "":
			return bad("Invalid batch payload format: request id '%s' has no 'url'.", it.ID)
		}
		for _, dep := range it.DependsOn {
			if !seen[strings.ToLower(dep)] {
				return bad("Invalid dependency for request Id '%s': '%s' is not an earlier request of the batch.", it.ID, dep)
			}
		}
		switch strings.ToUpper(it.Method) {
		case http.MethodPost, http.MethodPatch, http.MethodPut:
			if isNullBody(it.Body) || headerValue(it.Headers, "Content-Type") == "" {
				return bad("Write request id : %s does not contain Content-Type header or body.", it.ID)
			}
		}
		seen[id] = true
	}
	return nil
}

// outOfOrder shuffles responses, never leaving two or more in request
// order: a client that matches by position must fail every time.
func outOfOrder(responses []batchResponseItem) {
	if len(responses) < 2 {
		return
	}
	ids := make([]string, len(responses))
	for i, r := range responses {
		ids[i] = r.ID
	}
	rand.Shuffle(len(responses), func(i, j int) { responses[i], responses[j] = responses[j], responses[i] })
	for i, r := range responses {
		if r.ID != ids[i] {
			return
		}
	}
	first := responses[0] // the shuffle kept the order: rotate by one
	copy(responses, responses[1:])
	responses[len(responses)-1] = first
}

func isNullBody(b json.RawMessage) bool {
	t := bytes.TrimSpace(b)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

func headerValue(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// batchItem answers one item and logs it.
func (s *Server) batchItem(outer *call, it batchItem, statuses map[string]int) reply {
	c := &call{
		method:  strings.ToUpper(it.Method),
		header:  http.Header{},
		claims:  outer.claims, // items run with the batch's token
		base:    outer.base,
		batchID: outer.batchID,
		itemID:  it.ID,
		arrived: time.Now(),
		done:    outer.done,
	}
	for k, v := range it.Headers {
		c.header.Set(k, v)
	}
	if !isNullBody(it.Body) {
		c.body = itemBody(it.Body)
	}
	rep := s.runItem(c, it, statuses)
	s.finishItem(&rep, c.header.Get("client-request-id"))
	notify := s.logRequest(Request{Time: c.arrived, Method: c.method, Path: c.path, Query: c.rawQuery, Header: c.header,
		Body: c.body, Status: rep.status, BatchID: c.batchID, ItemID: c.itemID, Duration: time.Since(c.arrived)})
	notify() // the item is answered: its result is final, though the batch is still running
	return rep
}

func (s *Server) runItem(c *call, it batchItem, statuses map[string]int) reply {
	path, rawQuery, err := itemURL(it.URL)
	c.path = graphPrefix + path
	if err != nil {
		c.path = it.URL
		return errorReply(http.StatusBadRequest, codeODataBadRequest, err.Error())
	}
	c.rawQuery = rawQuery
	c.query, _ = url.ParseQuery(rawQuery) // a bad pair is dropped, as net/http does for standalone requests
	c.segs = splitPath(path)

	for _, dep := range it.DependsOn {
		if st := statuses[strings.ToLower(dep)]; st < 200 || st > 299 {
			return errorReply(http.StatusFailedDependency, codeFailedDependency,
				fmt.Sprintf("Failed dependency: request '%s' that this request depends on answered %d.", dep, st))
		}
	}
	if len(c.segs) == 1 && c.segs[0] == "$batch" {
		return errorReply(http.StatusBadRequest, codeODataBadRequest, "A $batch request cannot be nested in a batch.")
	}
	if f, ok := s.takeFault(c.method, c.path); ok && f.After {
		return s.afterItem(c, f, s.graphCall(c))
	} else if ok {
		if f.Hang > 0 {
			s.held(Request{Time: c.arrived, Method: c.method, Path: c.path, Query: c.rawQuery, Header: c.header,
				Body: c.body, BatchID: c.batchID, ItemID: c.itemID})
		}
		s.hang(c.done, f.Hang)
		switch {
		case f.Reset:
			return resetItemReply()
		case f.Status > 0:
			return faultReply(f)
		}
	}
	return s.graphCall(c)
}

// itemURL turns an item url (relative with or without a leading slash, or
// absolute) into a path below /v1.0 and a raw query.
func itemURL(raw string) (path, rawQuery string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("Invalid request URL '%s': %v.", raw, err)
	}
	p := u.Path
	if u.IsAbs() {
		switch {
		case p == graphPrefix || strings.HasPrefix(p, graphPrefix+"/"):
			p = strings.TrimPrefix(p, graphPrefix)
		default:
			return "", "", fmt.Errorf("Invalid request URL '%s': an absolute URL must point into /v1.0.", raw)
		}
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p, u.RawQuery, nil
}

// itemBody is the request body an item stands for: JSON as is; a JSON
// string (text or base64 bodies) as its content.
func itemBody(b json.RawMessage) []byte {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return []byte(s)
	}
	return append([]byte(nil), b...)
}

// finishItem stamps innerError on item errors; items carry only their own
// headers, not the transport ones.
func (s *Server) finishItem(r *reply, clientRequestID string) {
	requestID := newGUID()
	if clientRequestID == "" {
		clientRequestID = requestID
	}
	if r.status >= 400 && len(r.body) > 0 {
		r.body = withInnerError(r.body, requestID, clientRequestID, time.Now())
	}
	r.setHeader("Cache-Control", "no-cache")
}

func itemResponse(id string, r reply) batchResponseItem {
	out := batchResponseItem{ID: id, Status: r.status, Headers: map[string]string{}}
	for k, v := range r.header {
		out.Headers[k] = strings.Join(v, ", ")
	}
	switch {
	case len(r.body) == 0:
	case json.Valid(r.body):
		out.Body = r.body
	default:
		b, _ := json.Marshal(string(r.body)) // a non-JSON body travels as a JSON string
		out.Body = b
	}
	return out
}
