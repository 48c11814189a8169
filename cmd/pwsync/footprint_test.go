package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTemplatePackages pins issue 22's fix: text/template (and
// html/template, built on it) call reflect.Value.MethodByName, and a binary
// that can reach that call keeps every exported method of every type: 136.6
// instead of 48.5 MB stripped, most of it unused msgraph-sdk-go model
// methods. Notices use services/actuator/notifier/tmpl instead. (The test harness
// may use text/template: test dependencies are not in the binary.)
func TestNoTemplatePackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "text/template" || pkg == "html/template" {
			t.Errorf("the pwsync binary links %s, whose MethodByName keeps every method in the binary (~88 MB more, issue 22)", pkg)
		}
	}
}
