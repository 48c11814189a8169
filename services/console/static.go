package console

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/pwsync/pwsync/shared/adminapi"
)

//go:embed web
var webFS embed.FS

// registerStatic serves the console: / is the page, /console/ its assets.
// They hold no data (every datum comes from the API with the token), so
// they are served without authentication.
func registerStatic(s *adminapi.Server) {
	sub, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(sub)
	s.HandlePublic("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		http.ServeFileFS(w, r, sub, "index.html")
	}))
	s.HandlePublic("GET /console/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		files.ServeHTTP(w, r) // web/console/...
	}))
}

// setPageHeaders: no inline script, no framing, nothing from elsewhere.
func setPageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
}
