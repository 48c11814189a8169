// Layout tests: rules of the house that no single package can check.
package pwsync_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/pwsync/pwsync/"

// goFiles parses the imports (or the whole file) of every .go file under dir.
func goFiles(t *testing.T, dir string, mode parser.Mode, f func(path string, file *ast.File)) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, mode)
		if err != nil {
			return err
		}
		f(path, file)
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
}

// TestSharedImportsNoService: shared/ is below services/; an arrow upwards
// makes every service depend on another's internals. Direct imports are
// enough: shared packages import only shared ones and outside modules.
func TestSharedImportsNoService(t *testing.T) {
	n := 0
	goFiles(t, "shared", parser.ImportsOnly, func(path string, file *ast.File) {
		n++
		for _, imp := range file.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module+"services/") || strings.HasPrefix(p, module+"cmd/") {
				t.Errorf("%s imports %s: nothing in shared/ may import services/ or cmd/", path, p)
			}
		}
	})
	if n == 0 {
		t.Fatal("no Go files under shared/: the test would pass vacuously")
	}
}

// TestRigsOnlyInTests: testrig/ holds what tests stand on (the Graph
// simulator, the AD harness, test NATS, the cut proxy, the admin API test
// client). Production code may not lean on them; the one exception is the
// demo's `pwsync graphsim` command, and cmd/benchreport, which is a bench tool.
func TestRigsOnlyInTests(t *testing.T) {
	allowed := map[string]bool{
		"cmd/pwsync/main.go":      true, // `pwsync graphsim`
		"cmd/benchreport/main.go": true,
	}
	n := 0
	for _, dir := range []string{"shared", "services", "cmd"} {
		goFiles(t, dir, parser.ImportsOnly, func(path string, file *ast.File) {
			if strings.HasSuffix(path, "_test.go") {
				return
			}
			n++
			for _, imp := range file.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(p, module+"testrig/") && !allowed[filepath.ToSlash(path)] {
					t.Errorf("%s imports %s: test rigs are for tests", path, p)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no production Go files found: the test would pass vacuously")
	}
	// And the rigs stay in their folder: no simulator or harness among the
	// production packages.
	for _, rig := range []string{"graphsim", "adtest", "natstest", "cutproxy", "adminapitest", "benchreport"} {
		for _, dir := range []string{"shared/" + rig, "shared/adminapi/" + rig} {
			{
				if m, _ := filepath.Glob(dir + "/*.go"); len(m) > 0 {
					t.Errorf("%s: test rigs live under testrig/", dir)
				}
			}
		}
	}
}

// TestTopologyInOneFile: every stream, durable consumer, bucket and lease
// name is declared in shared/natsx/topology.go; services use its names.
func TestTopologyInOneFile(t *testing.T) {
	// A config literal names a stream, durable consumer or bucket
	// (ordered consumers are ephemeral and unnamed).
	configLit := regexp.MustCompile(`^jetstream\.(StreamConfig|ConsumerConfig|KeyValueConfig)$`)
	for _, dir := range []string{"shared", "services", "cmd"} {
		goFiles(t, dir, parser.SkipObjectResolution, func(path string, file *ast.File) {
			if strings.HasSuffix(path, "_test.go") || filepath.ToSlash(path) == "shared/natsx/topology.go" {
				return
			}
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CompositeLit:
					if configLit.MatchString(exprString(n.Type)) {
						t.Errorf("%s: %s declared outside shared/natsx/topology.go", path, exprString(n.Type))
					}
				case *ast.CallExpr:
					// lease.New(kv, key, ...): the key comes from natsx.Lease*.
					if exprString(n.Fun) == "lease.New" && len(n.Args) > 1 && hasStringLit(n.Args[1]) {
						t.Errorf("%s: lease key as a string literal; declare it in shared/natsx/topology.go", path)
					}
				case *ast.ValueSpec:
					// const LeaseKey = "..." and the like, outside topology.go.
					for i, name := range n.Names {
						if i < len(n.Values) && topologyName.MatchString(name.Name) && isStringLit(n.Values[i]) {
							t.Errorf("%s: %s is a NATS name declared outside shared/natsx/topology.go", path, name.Name)
						}
					}
				}
				return true
			})
		})
	}
}

var topologyName = regexp.MustCompile(`^(Bucket|Consumer|Stream|Lease)[A-Z]?[A-Za-z]*$|(Lease|Bucket)(Key|Name|Prefix)?$`)

func hasStringLit(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if b, ok := n.(*ast.BasicLit); ok && b.Kind == token.STRING {
			found = true
		}
		return !found
	})
	return found
}

func isStringLit(e ast.Expr) bool {
	b, ok := e.(*ast.BasicLit)
	return ok && b.Kind == token.STRING
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return ""
}
