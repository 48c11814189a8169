package campaign

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// ReportRow is what happened to one user.
type ReportRow struct {
	Idx        int                  `json:"index"`
	UPN        string               `json:"upn"`
	Kind       Kind                 `json:"kind"`
	DN         string               `json:"dn,omitempty"`
	ObjectGUID string               `json:"object_guid,omitempty"`
	CloudID    string               `json:"cloud_id,omitempty"`
	Outcome    string               `json:"outcome"` // done | failed | excluded | pending
	Steps      map[Step]*StepResult `json:"steps"`
}

// Report is every selected user's row, in target order, plus who was
// excluded and which UPNs matched nobody.
type Report struct {
	Campaign Campaign    `json:"campaign"`
	Stats    Stats       `json:"stats"`
	Users    []ReportRow `json:"users"`
	Details  Details     `json:"preview_details"`
}

// Report builds the report from KV.
func (s *Service) Report(ctx context.Context, id string) (Report, error) {
	st, err := s.Status(ctx, id)
	if err != nil {
		return Report{}, err
	}
	c := st.Campaign
	rep := Report{Campaign: c, Stats: st.Stats}
	if c.Targets == 0 {
		return rep, nil
	}
	targets, err := s.store.Targets(ctx, id, c.Targets)
	if err != nil {
		return rep, err
	}
	prog, err := s.store.AllProgress(ctx, id)
	if err != nil {
		return rep, err
	}
	if rep.Details, err = s.store.Details(ctx, id); err != nil {
		return rep, err
	}
	rep.Users = make([]ReportRow, len(targets))
	for i, t := range targets {
		row := ReportRow{Idx: t.Idx, UPN: t.UPN, Kind: t.Kind, DN: t.DN, ObjectGUID: t.ObjectGUID, CloudID: t.CloudID,
			Steps: map[Step]*StepResult{}, Outcome: StatusDone}
		p := prog[t.Idx]
		steps := c.StepsFor(t)
		for _, step := range steps {
			row.Steps[step] = p.Steps[step]
		}
		// Pending until every step ended; failed or excluded by the steps
		// the user is judged by (a failed compromised mark shows in its step).
		for _, step := range steps {
			if !p.Steps[step].Terminal() {
				row.Outcome = "pending"
			}
		}
		for _, step := range judged(steps) {
			switch r := p.Steps[step]; {
			case !r.Terminal():
			case r.Status == StatusFailed:
				row.Outcome = StatusFailed
			case r.Status == StatusExcluded && row.Outcome == StatusDone:
				row.Outcome = StatusExcluded // became break-glass after the preview
			}
		}
		rep.Users[i] = row
	}
	return rep, nil
}

// WriteJSON writes the report as JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

var reportSteps = []Step{StepADMustChange, StepCloudMustChange, StepVerifyMustChange, StepRevoke, StepNotify, StepConfirmCompromised}

// WriteCSV writes one line per user and step: what was done, Graph's or
// LDAP's answer, when.
func (r Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"index", "upn", "kind", "outcome", "step", "status", "http_status", "graph_code", "ldap_answer",
		"detail", "at", "attempts", "verified", "dn", "cloud_id"})
	for _, u := range r.Users {
		for _, st := range reportSteps {
			res, ok := u.Steps[st]
			if !ok {
				continue
			}
			rec := []string{strconv.Itoa(u.Idx), u.UPN, string(u.Kind), u.Outcome, string(st), "pending", "", "", "", "", "", "", "", u.DN, u.CloudID}
			if res != nil {
				rec[5] = res.Status
				if res.HTTP != 0 {
					rec[6] = strconv.Itoa(res.HTTP)
				}
				rec[7], rec[8], rec[9] = res.Code, res.LDAP, res.Detail
				rec[10] = res.At.UTC().Format(time.RFC3339Nano)
				rec[11] = strconv.Itoa(res.Attempts)
				rec[12] = strconv.FormatBool(res.Verified)
			}
			if err := cw.Write(rec); err != nil {
				return fmt.Errorf("writing report: %w", err)
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
