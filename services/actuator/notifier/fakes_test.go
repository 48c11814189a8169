package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pwsync/pwsync/shared/events"
	"github.com/pwsync/pwsync/shared/graph"
	"github.com/pwsync/pwsync/shared/natsx"
)

// fakeGraph knows users; only GetUser is used by the notifier.
type fakeGraph struct {
	mu    sync.Mutex
	users map[string]graph.User // by id and by lower-case UPN
}

func newFakeGraph(us ...graph.User) *fakeGraph {
	f := &fakeGraph{users: map[string]graph.User{}}
	for _, u := range us {
		f.users[u.ID] = u
		f.users[strings.ToLower(u.UPN)] = u
	}
	return f
}

func (f *fakeGraph) GetUser(_ context.Context, id string) (*graph.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		u, ok = f.users[strings.ToLower(id)]
	}
	if !ok {
		return nil, &graph.Error{Op: "GET /users/{id}", Status: http.StatusNotFound, Code: graph.CodeResourceNotFound}
	}
	return &u, nil
}
func (f *fakeGraph) FindByImmutableID(context.Context, string) (*graph.User, error) { return nil, nil }
func (f *fakeGraph) SetForceChange(context.Context, string, bool, bool) error       { return nil }
func (f *fakeGraph) SetPassword(context.Context, string, string, bool) error        { return nil }
func (f *fakeGraph) RevokeSessions(context.Context, string) error                   { return nil }
func (f *fakeGraph) AddGroupMember(context.Context, string, string) error           { return nil }
func (f *fakeGraph) RemoveGroupMember(context.Context, string, string) error        { return nil }
func (f *fakeGraph) SetPasswordPolicies(context.Context, string, string) error      { return nil }

type sentMail struct {
	From string
	Mail graph.Mail
}

type sentActivity struct {
	User     string
	Activity graph.Activity
}

// fakeMessenger records sends. noApp users answer 403 on Teams; failMail
// makes the next sendMail calls fail with the given errors, in order.
type fakeMessenger struct {
	mu         sync.Mutex
	mails      []sentMail
	activities []sentActivity
	noApp      map[string]bool
	failMail   []error
	failTeams  []error
}

func (f *fakeMessenger) SendMail(_ context.Context, from string, m graph.Mail) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.failMail) > 0 {
		err := f.failMail[0]
		f.failMail = f.failMail[1:]
		return err
	}
	f.mails = append(f.mails, sentMail{From: from, Mail: m})
	return nil
}

func (f *fakeMessenger) SendActivityNotification(_ context.Context, user string, a graph.Activity) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noApp[user] {
		return &graph.Error{Op: "POST sendActivityNotification", Status: http.StatusForbidden, Code: "Forbidden"}
	}
	if len(f.failTeams) > 0 {
		err := f.failTeams[0]
		f.failTeams = f.failTeams[1:]
		return err
	}
	f.activities = append(f.activities, sentActivity{User: user, Activity: a})
	return nil
}

func (f *fakeMessenger) counts() (mails, activities int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mails), len(f.activities)
}

// auditRecords reads the whole AUDIT stream.
func auditRecords(t *testing.T, js jetstream.JetStream) []events.AuditRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natsx.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.AuditRecord
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var r events.AuditRecord
		if json.Unmarshal(m.Data, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// hasAudit reports whether a record with the step (or "" for the action
// outcome), outcome and detail substring exists.
func hasAudit(recs []events.AuditRecord, step, outcome, detail string) bool {
	for _, r := range recs {
		if r.Step == step && r.Outcome == outcome && strings.Contains(r.Detail, detail) {
			return true
		}
	}
	return false
}

var netOpDial = net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
