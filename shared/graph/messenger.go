package graph

import "context"

// Mail is one message sent through sendMail.
type Mail struct {
	To      []string
	Subject string
	Text    string // plain-text body; used when HTML is empty
	HTML    string // HTML body; preferred when set
	// Headers are internetMessageHeaders; Graph accepts only names that
	// start with "x-".
	Headers map[string]string
	// SaveToSentItems keeps a copy in the sender's Sent Items.
	SaveToSentItems bool
}

// Activity is one Teams activity feed notification
// (sendActivityNotification). With ActivityType "systemDefault" the text
// goes in TemplateParameters["systemDefaultText"] and needs no manifest entry.
type Activity struct {
	TopicText          string // topic.value with source "text"
	TopicWebURL        string // required by Teams for a text topic
	ActivityType       string
	PreviewText        string // Teams shows the first 150 characters
	TemplateParameters map[string]string
	TeamsAppID         string // optional: disambiguates apps with the same Entra app id
}

// Messenger is what pwsync asks of Graph to notify users. It is kept apart
// from Client so that fakes of Client need not grow. Implementations return
// *Error for Graph's answers (Status, Code, RetryAfter).
type Messenger interface {
	// SendMail POSTs /users/{from}/sendMail: Graph answers 202 on acceptance
	// (not delivery). Exchange Online allows 30 messages a minute per mailbox.
	SendMail(ctx context.Context, from string, m Mail) error
	// SendActivityNotification POSTs /users/{user}/teamwork/sendActivityNotification
	// (5 a second per app and tenant). 403 when the Teams app is not
	// installed for the user.
	SendActivityNotification(ctx context.Context, user string, a Activity) error
}
