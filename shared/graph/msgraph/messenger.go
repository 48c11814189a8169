package msgraph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models/odataerrors"

	"github.com/pwsync/pwsync/shared/graph"
)

var _ graph.Messenger = (*Client)(nil)

// Ops of the messaging calls, by template (they end up in logs).
const (
	opSendMail     = "POST /users/{id}/sendMail"
	opSendActivity = "POST /users/{id}/teamwork/sendActivityNotification"
)

// The bodies are written as plain JSON through the SDK's request adapter
// (auth, CA, middleware), as Batch does: the generated models serialise
// extra properties (@odata.type, nulls) that a strict reader refuses, and
// these two bodies are small and documented.

type mailAddress struct {
	EmailAddress struct {
		Address string `json:"address"`
	} `json:"emailAddress"`
}

type mailHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type mailBody struct {
	Message struct {
		Subject string `json:"subject"`
		Body    struct {
			ContentType string `json:"contentType"`
			Content     string `json:"content"`
		} `json:"body"`
		ToRecipients           []mailAddress `json:"toRecipients"`
		InternetMessageHeaders []mailHeader  `json:"internetMessageHeaders,omitempty"`
	} `json:"message"`
	SaveToSentItems bool `json:"saveToSentItems"`
}

// SendMail implements graph.Messenger.
func (c *Client) SendMail(ctx context.Context, from string, m graph.Mail) error {
	if from == "" {
		return &graph.Error{Op: opSendMail, Status: http.StatusBadRequest, Message: "empty sender mailbox"}
	}
	var b mailBody
	b.Message.Subject = m.Subject
	b.Message.Body.ContentType, b.Message.Body.Content = "Text", m.Text
	if m.HTML != "" {
		b.Message.Body.ContentType, b.Message.Body.Content = "HTML", m.HTML
	}
	for _, to := range m.To {
		var a mailAddress
		a.EmailAddress.Address = to
		b.Message.ToRecipients = append(b.Message.ToRecipients, a)
	}
	names := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		names = append(names, k)
	}
	sort.Strings(names) // stable bodies: easier to compare in tests and logs
	for _, k := range names {
		b.Message.InternetMessageHeaders = append(b.Message.InternetMessageHeaders, mailHeader{Name: k, Value: m.Headers[k]})
	}
	b.SaveToSentItems = m.SaveToSentItems
	return c.postJSON(ctx, opSendMail, "{+baseurl}/users/{user%2Did}/sendMail", from, b)
}

type activityBody struct {
	Topic struct {
		Source string `json:"source"`
		Value  string `json:"value"`
		WebURL string `json:"webUrl,omitempty"`
	} `json:"topic"`
	ActivityType string `json:"activityType"`
	PreviewText  struct {
		Content string `json:"content"`
	} `json:"previewText"`
	TemplateParameters []mailHeader `json:"templateParameters,omitempty"`
	TeamsAppID         string       `json:"teamsAppId,omitempty"`
}

// SendActivityNotification implements graph.Messenger.
func (c *Client) SendActivityNotification(ctx context.Context, user string, a graph.Activity) error {
	if user == "" {
		return &graph.Error{Op: opSendActivity, Status: http.StatusBadRequest, Message: "empty user id"}
	}
	var b activityBody
	b.Topic.Source, b.Topic.Value, b.Topic.WebURL = "text", a.TopicText, a.TopicWebURL
	b.ActivityType = a.ActivityType
	b.PreviewText.Content = a.PreviewText
	names := make([]string, 0, len(a.TemplateParameters))
	for k := range a.TemplateParameters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.TemplateParameters = append(b.TemplateParameters, mailHeader{Name: k, Value: a.TemplateParameters[k]})
	}
	b.TeamsAppID = a.TeamsAppID
	return c.postJSON(ctx, opSendActivity, "{+baseurl}/users/{user%2Did}/teamwork/sendActivityNotification", user, b)
}

// postJSON POSTs body to the templated URL and expects an empty success.
func (c *Client) postJSON(ctx context.Context, op, tmpl, user string, body any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("graph %s: encode: %w", op, err)
	}
	ri := abs.NewRequestInformation()
	ri.Method = abs.POST
	ri.UrlTemplate = tmpl
	ri.PathParameters["baseurl"] = c.adapter.GetBaseUrl()
	ri.PathParameters["user%2Did"] = user
	ri.Headers.Add("Accept", "application/json")
	ri.SetStreamContentAndContentType(payload, "application/json")
	err = c.adapter.SendNoContent(ctx, ri, abs.ErrorMappings{
		"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue,
	})
	return mapError(op, err)
}
