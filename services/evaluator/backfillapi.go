package evaluator

import (
	"context"
	"errors"
	"net/http"

	"github.com/pwsync/pwsync/shared/adminapi"
)

// RegisterBackfill adds the backfill brake's admin API:
//
//	GET  /api/v1/backfill               viewer    batches, newest first
//	GET  /api/v1/backfill/{id}          viewer    one batch
//	POST /api/v1/backfill/{id}/approve  approver  release a held batch
//	POST /api/v1/backfill/{id}/reject   approver  drop a held batch
//
// The admin API audits every request; the gate audits the decision with
// the approver's name.
func RegisterBackfill(s *adminapi.Server, g *Gate) {
	s.HandleFunc("GET /api/v1/backfill", adminapi.RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		bs, err := g.List(r.Context())
		if err != nil {
			failBackfill(w, err)
			return
		}
		if bs == nil {
			bs = []Batch{}
		}
		adminapi.WriteJSON(w, http.StatusOK, bs)
	})
	s.HandleFunc("GET /api/v1/backfill/{id}", adminapi.RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		b, err := g.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			failBackfill(w, err)
			return
		}
		adminapi.WriteJSON(w, http.StatusOK, b)
	})
	decide := func(fn func(ctx context.Context, id, by string) (Batch, error)) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			p, _ := adminapi.PrincipalFrom(r.Context())
			b, err := fn(r.Context(), r.PathValue("id"), p.Name)
			if err != nil {
				failBackfill(w, err)
				return
			}
			adminapi.WriteJSON(w, http.StatusOK, b)
		}
	}
	s.HandleFunc("POST /api/v1/backfill/{id}/approve", adminapi.RoleApprover, decide(g.Approve))
	s.HandleFunc("POST /api/v1/backfill/{id}/reject", adminapi.RoleApprover, decide(g.Reject))
}

func failBackfill(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrBatchNotFound):
		adminapi.Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBatchState):
		adminapi.Error(w, http.StatusConflict, err.Error())
	default:
		adminapi.Error(w, http.StatusInternalServerError, "backfill: "+err.Error())
	}
}
