package graph

import (
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
