package events

// KindAdmin is the audit kind of an admin API request (subject audit.admin).
const KindAdmin = "admin"

// AdminRequest is who called the admin API, what they asked and the answer.
// The bearer token is never recorded, only the name it was issued under.
type AdminRequest struct {
	Principal  string  `json:"principal"` // token name; "" when authentication failed
	Roles      string  `json:"roles,omitempty"`
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	Status     int     `json:"status"`
	Remote     string  `json:"remote,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}
