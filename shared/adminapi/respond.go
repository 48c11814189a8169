package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing left to tell it
}

// Error answers {"error": msg} with status.
func Error(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

// DecodeJSON reads a request body strictly (unknown fields refused) into v.
// Its errors are meant for the caller: answer them with 400 (or 413 when
// IsTooLarge).
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty request body")
		}
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON body: trailing data")
	}
	return nil
}

// IsTooLarge reports whether err comes from the request body size limit.
func IsTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// DecodeError answers a DecodeJSON error with 413 or 400.
func DecodeError(w http.ResponseWriter, err error) {
	if IsTooLarge(err) {
		Error(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	Error(w, http.StatusBadRequest, err.Error())
}

// WhoAmI answers the caller's name and roles (the console's login check).
func WhoAmI(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	WriteJSON(w, http.StatusOK, map[string]any{"name": p.Name, "roles": p.Roles})
}
