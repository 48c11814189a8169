package graph

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// IsAlreadyMember recognises Graph's answer to adding an existing group
// member (members/$ref). Its code is the generic Request_BadRequest, so —
// against the rule of branching on codes only — the message is the only
// distinguishing signal.
func IsAlreadyMember(err error) bool {
	var ge *Error
	return errors.As(err, &ge) && ge.Status == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(ge.Message), "added object references already exist")
}

// MemberChecker tells whether a user is in a group (directly or through
// nested groups). It settles a group add whose answer was lost without
// sending it again. It is apart from Client so that the fakes of Client
// need not grow; *msgraph.Client implements it (checkMemberGroups).
type MemberChecker interface {
	IsGroupMember(ctx context.Context, groupID, userID string) (bool, error)
}
