package graphsim

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Notifications to users: sendMail (Exchange Online) and Teams'
// sendActivityNotification. Neither is a directory write; each has its own
// limits: per sending mailbox 30 messages a minute, 10,000 recipients a
// rolling day and 4 concurrent requests (Outlook's per app per mailbox);
// 5 activity notifications a second per app and tenant. Every refusal by a
// limit is counted in Stats, which is how benchmarks prove "zero limit
// violations".

const (
	defaultMailPerMinute        = 30
	defaultMailRecipientsPerDay = 10000
	defaultMailConcurrency      = 4
	defaultActivityPerSecond    = 5
	maxRecipients               = 1000 // Exchange: recipients per message
)

// Mail is a message sent through sendMail, for tests.
type Mail struct {
	Time            time.Time
	From            string // the mailbox in the URL, as given
	To, Cc, Bcc     []string
	Subject         string
	ContentType     string // "Text" or "HTML"
	Body            string
	Headers         map[string]string // internetMessageHeaders
	SaveToSentItems bool
	MIME            []byte // set instead of the fields above for a MIME send
}

// ActivityNotification is a Teams activity feed notification, for tests.
type ActivityNotification struct {
	Time               time.Time
	UserID             string
	ActivityType       string
	TopicSource        string // "entityUrl" or "text"
	TopicValue         string
	TopicWebURL        string
	PreviewText        string
	TemplateParameters map[string]string
	ChainID            int64
}

// SentMail returns the messages sent so far, oldest first.
func (s *Server) SentMail() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mail)
}

// ActivityNotifications returns the Teams notifications sent so far.
func (s *Server) ActivityNotifications() []ActivityNotification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.activities)
}

// SetTeamsAppInstalled says whether pwsync's Teams app is installed for a
// user; without it Teams refuses activity notifications to them. It is
// installed for everyone by default.
func (s *Server) SetTeamsAppInstalled(idOrUPN string, installed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.store.lookup(idOrUPN); u != nil {
		if installed {
			delete(s.noTeamsApp, u.ID)
		} else {
			s.noTeamsApp[u.ID] = true
		}
	}
}

type emailAddress struct {
	EmailAddress struct {
		Address string `json:"address"`
		Name    string `json:"name"`
	} `json:"emailAddress"`
}

type sendMailRequest struct {
	Message *struct {
		Subject string `json:"subject"`
		Body    *struct {
			ContentType string `json:"contentType"`
			Content     string `json:"content"`
		} `json:"body"`
		ToRecipients           []emailAddress `json:"toRecipients"`
		CcRecipients           []emailAddress `json:"ccRecipients"`
		BccRecipients          []emailAddress `json:"bccRecipients"`
		InternetMessageHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"internetMessageHeaders"`
	} `json:"message"`
	SaveToSentItems *bool `json:"saveToSentItems"`
}

// POST /users/{id | userPrincipalName}/sendMail
func (s *Server) sendMail(c *call) reply {
	mail := Mail{From: c.vars[0], SaveToSentItems: true}
	if strings.HasPrefix(strings.ToLower(c.header.Get("Content-Type")), "text/plain") {
		// MIME, base64-encoded.
		mime, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(c.body)))
		if err != nil || len(mime) == 0 {
			return errorReply(http.StatusBadRequest, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
		}
		mail.MIME = mime
	} else {
		var req sendMailRequest
		if err := decodeStrict(c.body, &req); err != nil {
			return errorReply(http.StatusBadRequest, "RequestBodyRead", fmt.Sprintf("Invalid sendMail request body: %v.", err))
		}
		if req.Message == nil {
			return errorReply(http.StatusBadRequest, "ErrorInvalidRequest", "The message parameter is required.")
		}
		m := req.Message
		var rep *reply
		if mail.To, rep = addresses(m.ToRecipients); rep != nil {
			return *rep
		}
		if mail.Cc, rep = addresses(m.CcRecipients); rep != nil {
			return *rep
		}
		if mail.Bcc, rep = addresses(m.BccRecipients); rep != nil {
			return *rep
		}
		switch n := len(mail.To) + len(mail.Cc) + len(mail.Bcc); {
		case n == 0:
			return errorReply(http.StatusBadRequest, "ErrorInvalidRecipients", "At least one recipient is required, but none were found.")
		case n > maxRecipients:
			return errorReply(http.StatusBadRequest, "ErrorTooManyRecipients", fmt.Sprintf("A message can have at most %d recipients.", maxRecipients))
		}
		mail.Subject = m.Subject
		mail.ContentType = "Text"
		if m.Body != nil {
			switch strings.ToLower(m.Body.ContentType) {
			case "", "text":
			case "html":
				mail.ContentType = "HTML"
			default:
				return errorReply(http.StatusBadRequest, "RequestBodyRead", fmt.Sprintf("Invalid body contentType '%s': want Text or HTML.", m.Body.ContentType))
			}
			mail.Body = m.Body.Content
		}
		for _, h := range m.InternetMessageHeaders {
			if !strings.HasPrefix(strings.ToLower(h.Name), "x-") {
				return errorReply(http.StatusBadRequest, "InvalidInternetMessageHeader", fmt.Sprintf("The internet message header name '%s' should start with 'x-' or 'X-'.", h.Name))
			}
			if mail.Headers == nil {
				mail.Headers = map[string]string{}
			}
			mail.Headers[h.Name] = h.Value
		}
		if req.SaveToSentItems != nil {
			mail.SaveToSentItems = *req.SaveToSentItems
		}
	}

	s.mu.Lock()
	u := s.store.lookup(c.vars[0])
	switch {
	case u == nil:
		s.mu.Unlock()
		return errorReply(http.StatusNotFound, "ErrorInvalidUser", fmt.Sprintf("The requested user '%s' is invalid.", c.vars[0]))
	case u.Mail == "":
		s.mu.Unlock()
		return errorReply(http.StatusNotFound, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
	}
	box := strings.ToLower(u.ID)
	if rep := s.mailLimits(box, mail); rep != nil {
		s.mu.Unlock()
		return *rep
	}
	// Counted at arrival; the mailbox's place is held while Exchange
	// accepts the message.
	mail.Time = time.Now()
	s.mailInFlight[box]++
	s.stats.MaxMailInFlight = max(s.stats.MaxMailInFlight, s.mailInFlight[box])
	s.mu.Unlock()
	s.hang(c.done, s.opts.MailLatency)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailInFlight[box]--
	// Accepted even if the client gave up meanwhile: it cannot know.
	s.mail = append(s.mail, mail)
	return emptyReply(http.StatusAccepted)
}

// mailLimits checks a message against its mailbox's limits and, when all
// allow it, spends them; the caller holds s.mu. The concurrency refusal is
// Outlook's (ApplicationThrottled, "MailboxConcurrency"); the daily one is
// modelled as a 429 with Exchange's submission quota code.
func (s *Server) mailLimits(box string, m Mail) *reply {
	refuse := func(code, msg string, wait time.Duration) *reply {
		s.stats.MailThrottled++
		r := errorReply(http.StatusTooManyRequests, code, msg)
		r.setHeader("Retry-After", retryAfterValue(wait))
		return &r
	}
	if limit := limitOrDefault(s.opts.MailConcurrency, defaultMailConcurrency); limit > 0 && s.mailInFlight[box] >= limit {
		s.stats.MailConcurrencyThrottled++
		return refuse("ApplicationThrottled", "Application is over its MailboxConcurrency limit.", time.Second)
	}
	now := time.Now()
	rcpts := max(len(m.To)+len(m.Cc)+len(m.Bcc), 1) // a MIME message: at least one
	if ok, wait, _ := s.mailDay.takeN(box, now, rcpts, false); !ok {
		s.stats.MailDayThrottled++
		return refuse("ErrorSubmissionQuotaExceeded", "Mailbox has exceeded its limit of recipients per day.", wait)
	}
	if ok, wait, _ := s.mailLimit.take(box, now); !ok {
		return refuse("ApplicationThrottled", "Mailbox has exceeded its limit of messages per minute.", wait)
	}
	s.mailDay.takeN(box, now, rcpts, true)
	return nil
}

func addresses(rs []emailAddress) ([]string, *reply) {
	var out []string
	for _, r := range rs {
		a := strings.TrimSpace(r.EmailAddress.Address)
		if a == "" || !strings.Contains(a, "@") {
			rep := errorReply(http.StatusBadRequest, "ErrorInvalidRecipients", fmt.Sprintf("Invalid recipient address '%s'.", a))
			return nil, &rep
		}
		out = append(out, a)
	}
	return out, nil
}

type activityRequest struct {
	Topic *struct {
		Source string `json:"source"`
		Value  string `json:"value"`
		WebURL string `json:"webUrl"`
	} `json:"topic"`
	ActivityType string `json:"activityType"`
	ChainID      *int64 `json:"chainId"`
	PreviewText  *struct {
		Content string `json:"content"`
	} `json:"previewText"`
	TemplateParameters []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"templateParameters"`
	TeamsAppID string `json:"teamsAppId"`
}

// POST /users/{id | userPrincipalName}/teamwork/sendActivityNotification
func (s *Server) sendActivity(c *call) reply {
	var req activityRequest
	if err := decodeStrict(c.body, &req); err != nil {
		return errorReply(http.StatusBadRequest, codeODataBadRequest, fmt.Sprintf("Invalid request body: %v.", err))
	}
	bad := func(msg string) reply { return errorReply(http.StatusBadRequest, codeODataBadRequest, msg) }
	switch {
	case req.Topic == nil || req.Topic.Value == "":
		return bad("The topic with its value is required.")
	case req.Topic.Source != "entityUrl" && req.Topic.Source != "text":
		return bad(fmt.Sprintf("Invalid topic source '%s': want entityUrl or text.", req.Topic.Source))
	case req.Topic.Source == "text" && req.Topic.WebURL == "":
		return bad("topic.webUrl is required when topic.source is text.")
	case req.ActivityType == "":
		return bad("activityType is required.")
	case req.PreviewText == nil:
		return bad("previewText is required.")
	}
	params := map[string]string{}
	for _, p := range req.TemplateParameters {
		params[p.Name] = p.Value
	}
	if req.ActivityType == "systemDefault" && params["systemDefaultText"] == "" {
		return bad("The systemDefault activity type needs the systemDefaultText template parameter.")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.store.lookup(c.vars[0])
	if u == nil {
		return notFound(c.vars[0])
	}
	if s.noTeamsApp[u.ID] {
		return errorReply(http.StatusForbidden, "Forbidden", "The Teams app that sends the notification is not installed for the recipient.")
	}
	if ok, wait, _ := s.activityLimit.take(c.claims.AppID+"/"+c.claims.Tid, time.Now()); !ok {
		s.stats.ActivityThrottled++
		r := errorReply(http.StatusTooManyRequests, codeTooManyRequests, "Too many activity notifications for this app and tenant.")
		r.setHeader("Retry-After", retryAfterValue(wait))
		return r
	}
	n := ActivityNotification{Time: time.Now(), UserID: u.ID, ActivityType: req.ActivityType, TopicSource: req.Topic.Source,
		TopicValue: req.Topic.Value, TopicWebURL: req.Topic.WebURL, PreviewText: req.PreviewText.Content, TemplateParameters: params}
	if req.ChainID != nil {
		n.ChainID = *req.ChainID
	}
	s.activities = append(s.activities, n)
	return emptyReply(http.StatusNoContent)
}
