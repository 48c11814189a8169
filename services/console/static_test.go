package console_test

import (
	"io"
	"strings"
	"testing"

	"github.com/pwsync/pwsync/shared/adminapi"
)

// The console's files are served without a token, with types a browser
// runs under nosniff and a strict CSP.
func TestStaticFiles(t *testing.T) {
	f := start(t)
	c := adminapi.HTTPClient(f.viewer)
	for path, ctype := range map[string]string{"/": "text/html", "/console/app.js": "javascript", "/console/app.css": "text/css"} {
		resp, err := c.Get(f.env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) || len(b) < 100 {
			t.Errorf("%s: %d %q %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
	}
}
