package campaign

import (
	"context"
	"errors"
	"net/http"

	"github.com/pwsync/pwsync/shared/adminapi"
)

// maxSpecBytes bounds a create request (a spec with a large UPN list).
const maxSpecBytes = MaxImportBytes + 1<<20

// Register adds the campaign routes to the admin API. The admin server
// authenticates, checks the minimum role and audits every request; the
// rules beyond roles (the approver is not the creator, approval above the
// threshold, the hard cap) are the Service's.
//
//	GET  /api/v1/campaigns                  viewer    list
//	POST /api/v1/campaigns                  operator  create (a Spec)
//	GET  /api/v1/campaigns/{id}             viewer    status: campaign + counters
//	GET  /api/v1/campaigns/{id}/preview     viewer    the last preview, with excluded and unmatched
//	POST /api/v1/campaigns/{id}/preview     operator  (re)run the preview
//	POST /api/v1/campaigns/{id}/approve     approver  (not the creator)
//	POST /api/v1/campaigns/{id}/start|pause|resume|cancel  operator
//	GET  /api/v1/campaigns/{id}/report      viewer    ?format=json (default) | csv
func Register(s *adminapi.Server, svc *Service) {
	a := &api{svc: svc}
	s.HandleFunc("GET /api/v1/campaigns", adminapi.RoleViewer, a.list)
	s.HandleFunc("POST /api/v1/campaigns", adminapi.RoleOperator, a.create)
	s.HandleFunc("GET /api/v1/campaigns/{id}", adminapi.RoleViewer, a.status)
	s.HandleFunc("GET /api/v1/campaigns/{id}/preview", adminapi.RoleViewer, a.getPreview)
	s.HandleFunc("POST /api/v1/campaigns/{id}/preview", adminapi.RoleOperator, a.op(svc.Preview))
	s.HandleFunc("POST /api/v1/campaigns/{id}/approve", adminapi.RoleApprover, a.op(svc.Approve))
	s.HandleFunc("POST /api/v1/campaigns/{id}/start", adminapi.RoleOperator, a.op(svc.Start))
	s.HandleFunc("POST /api/v1/campaigns/{id}/pause", adminapi.RoleOperator, a.op(svc.Pause))
	s.HandleFunc("POST /api/v1/campaigns/{id}/resume", adminapi.RoleOperator, a.op(svc.Resume))
	s.HandleFunc("POST /api/v1/campaigns/{id}/cancel", adminapi.RoleOperator, a.op(svc.Cancel))
	s.HandleFunc("GET /api/v1/campaigns/{id}/report", adminapi.RoleViewer, a.report)
}

type api struct{ svc *Service }

func who(r *http.Request) string {
	p, _ := adminapi.PrincipalFrom(r.Context())
	return p.Name
}

// fail maps the service's errors to statuses.
func fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		status = http.StatusUnprocessableEntity
	}
	adminapi.Error(w, status, err.Error())
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	cs, err := a.svc.store.List(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	for i := range cs {
		cs[i].Preview, cs[i].Log = nil, nil // the list stays small
	}
	adminapi.WriteJSON(w, http.StatusOK, map[string]any{"campaigns": cs})
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxSpecBytes)
	var spec Spec
	if err := adminapi.DecodeJSON(r, &spec); err != nil {
		adminapi.DecodeError(w, err)
		return
	}
	c, err := a.svc.Create(r.Context(), spec, who(r))
	if err != nil {
		fail(w, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusCreated, c)
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, st)
}

// PreviewView is the stored preview with its lists.
type PreviewView struct {
	Campaign Campaign `json:"campaign"`
	Details  Details  `json:"details"`
}

func (a *api) getPreview(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, _, err := a.svc.store.Get(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	d, err := a.svc.store.Details(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	adminapi.WriteJSON(w, http.StatusOK, PreviewView{Campaign: c, Details: d})
}

func (a *api) op(fn func(ctx context.Context, id, by string) (Campaign, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := fn(r.Context(), r.PathValue("id"), who(r))
		if err != nil {
			fail(w, err)
			return
		}
		adminapi.WriteJSON(w, http.StatusOK, c)
	}
}

func (a *api) report(w http.ResponseWriter, r *http.Request) {
	rep, err := a.svc.Report(r.Context(), r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	switch r.URL.Query().Get("format") {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		_ = rep.WriteJSON(w) // the client went away: nothing to tell it
	case "csv":
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="campaign-`+rep.Campaign.ID+`.csv"`)
		_ = rep.WriteCSV(w)
	default:
		adminapi.Error(w, http.StatusBadRequest, "format: json or csv")
	}
}
