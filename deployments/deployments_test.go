// Package deployments_test checks the deployment files against each other
// and against the code: every YAML parses, images and ports agree with the
// Dockerfile, the configs they mount load with shared/config, the Helm chart
// renders (Go templates with the Sprig functions it uses) to valid manifests,
// and the systemd unit runs existing subcommands. No docker or helm needed.
package deployments_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"gopkg.in/yaml.v3"

	"github.com/pwsync/pwsync/shared/config"
)

const image = "ghcr.io/pwsync/pwsync"

// docs parses every YAML document of data.
func docs(t *testing.T, name string, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// get walks m along a dotted path.
func get(m any, path string) any {
	for _, k := range strings.Split(path, ".") {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

// loadConfig loads a pwsync config whose secrets and CA files live under
// secretDir in the deployment: they are pointed at stand-ins here.
func loadConfig(t *testing.T, name string, data []byte, secretDir string, target config.Targets) config.Config {
	t.Helper()
	tmp := t.TempDir()
	re := regexp.MustCompile(regexp.QuoteMeta(secretDir) + `/[A-Za-z0-9._-]+`)
	text := re.ReplaceAllStringFunc(string(data), func(p string) string {
		stand := filepath.Join(tmp, filepath.Base(p))
		if err := os.WriteFile(stand, []byte("stand-in\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return stand
	})
	path := filepath.Join(tmp, "pwsync.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, target, func(string) string { return "from-env" })
	if err != nil {
		t.Fatalf("%s does not load: %v", name, err)
	}
	return cfg
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

// dockerfile is what the tests need from the Dockerfile's final stage.
type dockerfile struct {
	From, User string
	Expose     []string
	Entrypoint string
	Cmd        []string
	CGOOff     bool
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var d dockerfile
	sc := bufio.NewScanner(bytes.NewReader(read(t, "Dockerfile")))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			d = dockerfile{From: f[1], CGOOff: d.CGOOff} // the last stage counts
		case "USER":
			d.User = f[1]
		case "EXPOSE":
			d.Expose = append(d.Expose, f[1:]...)
		case "ENTRYPOINT":
			var ep []string
			if err := yaml.Unmarshal([]byte(strings.Join(f[1:], " ")), &ep); err != nil || len(ep) == 0 {
				t.Fatalf("ENTRYPOINT must be exec form: %v", err)
			}
			d.Entrypoint = ep[0]
		case "CMD":
			if err := yaml.Unmarshal([]byte(strings.Join(f[1:], " ")), &d.Cmd); err != nil {
				t.Fatalf("CMD must be exec form: %v", err)
			}
		case "RUN":
			if strings.Contains(sc.Text(), "CGO_ENABLED=0") && strings.Contains(sc.Text(), "./cmd/pwsync") {
				d.CGOOff = true
			}
		}
	}
	return d
}

// subcommands are the commands cmd/pwsync/main.go dispatches.
func subcommands(t *testing.T) []string {
	t.Helper()
	src := string(read(t, filepath.Join("..", "cmd", "pwsync", "main.go")))
	var out []string
	for _, m := range regexp.MustCompile(`case "([a-z]+)"`).FindAllStringSubmatch(src, -1) {
		out = append(out, m[1])
	}
	return out
}

var targets = map[string]config.Targets{"all": config.AllTargets, "ingest": {Ingest: true},
	"evaluator": {Evaluator: true}, "actuator": {Actuator: true}}

// checkRunArgs checks `run --config PATH --target X` and returns PATH and X.
func checkRunArgs(t *testing.T, where string, args []string) (cfgPath, target string) {
	t.Helper()
	if len(args) == 0 || !slices.Contains(subcommands(t), args[0]) {
		t.Fatalf("%s: %q is not a pwsync subcommand (%v)", where, args, subcommands(t))
	}
	target = "all"
	for i := 1; i < len(args)-1; i++ {
		switch args[i] {
		case "--config":
			cfgPath = args[i+1]
		case "--target":
			target = args[i+1]
		}
	}
	if _, ok := targets[target]; !ok {
		t.Errorf("%s: unknown target %q", where, target)
	}
	return cfgPath, target
}

func TestEveryYAMLParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		if strings.Contains(p, "templates"+string(filepath.Separator)) {
			return nil // Helm templates: rendered and parsed in TestHelmChart
		}
		docs(t, p, read(t, p))
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d YAML files found", n)
	}
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	if !strings.HasPrefix(d.From, "gcr.io/distroless/static") && d.From != "scratch" {
		t.Errorf("final stage %q: want distroless/static (CA certs, no libc needed) or scratch", d.From)
	}
	if !d.CGOOff {
		t.Errorf("the binary must be built with CGO_ENABLED=0 (static)")
	}
	if d.User == "" || d.User == "root" || strings.HasPrefix(d.User, "0") {
		t.Errorf("USER %q: must not be root", d.User)
	}
	if !slices.Equal(d.Expose, []string{"8443", "9090"}) {
		t.Errorf("EXPOSE %v: want the webhook and ops ports", d.Expose)
	}
	// The ports are the defaults' (webhook) and what every deployment config sets (ops).
	if p := port(t, config.Default().Webhook.Listen); !slices.Contains(d.Expose, p) {
		t.Errorf("default webhook.listen port %s not exposed", p)
	}
	if d.Entrypoint != "/usr/local/bin/pwsync" {
		t.Errorf("ENTRYPOINT %q", d.Entrypoint)
	}
	if cfg, _ := checkRunArgs(t, "Dockerfile CMD", d.Cmd); cfg != "/etc/pwsync/pwsync.yaml" {
		t.Errorf("CMD config %q: the compose file and the chart mount /etc/pwsync/pwsync.yaml", cfg)
	}
}

func TestCompose(t *testing.T) {
	c := docs(t, "docker-compose.yaml", read(t, "docker-compose.yaml"))[0]
	services, _ := c["services"].(map[string]any)
	secrets, _ := c["secrets"].(map[string]any)
	exposed := parseDockerfile(t).Expose

	var nats []string
	seen := map[string]bool{}
	for name, raw := range services {
		s := raw.(map[string]any)
		img, _ := s["image"].(string)
		switch {
		case strings.HasPrefix(img, "nats:"):
			nats = append(nats, name)
			cmd := fmt.Sprint(s["command"])
			for _, want := range []string{"--jetstream", "--cluster_name", "nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222"} {
				if !strings.Contains(cmd, want) {
					t.Errorf("%s: command lacks %s", name, want)
				}
			}
		case strings.HasPrefix(img, image+":"):
			var args []string
			for _, a := range s["command"].([]any) {
				args = append(args, a.(string))
			}
			cfgPath, target := checkRunArgs(t, name, args)
			seen[target] = true
			var mounted string
			for _, v := range s["volumes"].([]any) {
				src, dst, _ := strings.Cut(strings.TrimSuffix(v.(string), ":ro"), ":")
				if dst == cfgPath {
					mounted = src
				}
			}
			if mounted == "" {
				t.Fatalf("%s: nothing mounted at %s", name, cfgPath)
			}
			data := read(t, mounted)
			cfg := loadConfig(t, mounted, data, "/run/secrets", targets[target])
			// Every secret file the config names is a compose secret of this service.
			for _, m := range regexp.MustCompile(`/run/secrets/([A-Za-z0-9._-]+)`).FindAllStringSubmatch(string(data), -1) {
				if _, ok := secrets[m[1]]; !ok {
					t.Errorf("%s: config reads /run/secrets/%s, not a compose secret", name, m[1])
				}
				if !slices.Contains(s["secrets"].([]any), any(m[1])) {
					t.Errorf("%s: secret %s not given to the service", name, m[1])
				}
			}
			if !strings.Contains(cfg.NATS.URL, "nats-1:4222") || cfg.NATS.Replicas != 3 {
				t.Errorf("%s: config must use the compose cluster with R3 (url %q, replicas %d)", name, cfg.NATS.URL, cfg.NATS.Replicas)
			}
			if p := port(t, cfg.Ops.Listen); !slices.Contains(exposed, p) {
				t.Errorf("%s: ops.listen port %s not EXPOSEd", name, p)
			}
			ports, _ := s["ports"].([]any)
			for _, p := range ports {
				parts := strings.Split(p.(string), ":")
				if !slices.Contains(exposed, parts[len(parts)-1]) {
					t.Errorf("%s: published port %s is not EXPOSEd by the image", name, p)
				}
			}
		default:
			t.Errorf("service %s: unexpected image %q", name, img)
		}
	}
	slices.Sort(nats)
	if !slices.Equal(nats, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Errorf("nats services %v: want a 3-node cluster", nats)
	}
	for _, target := range []string{"ingest", "evaluator", "actuator"} {
		if !seen[target] {
			t.Errorf("no service runs --target %s", target)
		}
	}
}

// helmFuncs are the Sprig/Helm functions the chart uses.
func helmFuncs(tpl *template.Template) template.FuncMap {
	toYAML := func(v any) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			panic(err)
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	return template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := tpl.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"tpl": func(text string, data any) (string, error) {
			t, err := template.New("tpl").Funcs(helmFuncs(tpl)).Parse(text)
			if err != nil {
				return "", err
			}
			var b bytes.Buffer
			err = t.Execute(&b, data)
			return b.String(), err
		},
		"toYaml": toYAML,
		"nindent": func(n int, s string) string {
			pad := strings.Repeat(" ", n)
			return "\n" + pad + strings.ReplaceAll(s, "\n", "\n"+pad)
		},
		"sha256sum":  func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) },
		"quote":      func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
		"trunc":      func(n int, s string) string { return s[:min(n, len(s))] },
		"trimSuffix": func(suf, s string) string { return strings.TrimSuffix(s, suf) },
		"default": func(d, v any) any {
			if v == nil || v == "" {
				return d
			}
			return v
		},
	}
}

func TestHelmChart(t *testing.T) {
	dir := filepath.Join("helm", "pwsync")
	chart := docs(t, "Chart.yaml", read(t, filepath.Join(dir, "Chart.yaml")))[0]
	var natsDep map[string]any
	for _, d := range chart["dependencies"].([]any) {
		if d.(map[string]any)["name"] == "nats" {
			natsDep = d.(map[string]any)
		}
	}
	if natsDep == nil || natsDep["repository"] != "https://nats-io.github.io/k8s/helm/charts/" {
		t.Fatalf("Chart.yaml: want the official nats chart as a dependency, got %v", natsDep)
	}
	values := docs(t, "values.yaml", read(t, filepath.Join(dir, "values.yaml")))[0]
	if get(values, "image.repository") != image {
		t.Errorf("image.repository %v", get(values, "image.repository"))
	}
	if get(values, "nats.config.jetstream.enabled") != true || get(values, "nats.config.cluster.replicas") != 3 {
		t.Errorf("the nats subchart must run a 3-node JetStream cluster")
	}

	// Render the templates as Helm would.
	root := template.New("chart")
	root.Funcs(helmFuncs(root))
	files, _ := filepath.Glob(filepath.Join(dir, "templates", "*"))
	for _, f := range files {
		if _, err := root.New(filepath.Base(f)).Parse(string(read(t, f))); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	data := map[string]any{"Values": values, "Release": map[string]any{"Name": "rel"},
		"Chart": map[string]any{"Name": chart["name"], "AppVersion": chart["appVersion"]}}
	var manifests []map[string]any
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "_") {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, name, data); err != nil {
			t.Fatalf("rendering %s: %v", name, err)
		}
		manifests = append(manifests, docs(t, name, b.Bytes())...)
	}

	exposed := parseDockerfile(t).Expose
	var cfgText string
	deployments := map[string]bool{}
	for _, m := range manifests {
		switch m["kind"] {
		case "ConfigMap":
			cfgText = get(m, "data").(map[string]any)["pwsync.yaml"].(string)
		case "Deployment":
			c := get(m, "spec.template.spec.containers").([]any)[0].(map[string]any)
			if img := c["image"].(string); img != image+":"+chart["appVersion"].(string) {
				t.Errorf("%s: image %s", get(m, "metadata.name"), img)
			}
			var args []string
			for _, a := range c["args"].([]any) {
				args = append(args, a.(string))
			}
			cfgPath, target := checkRunArgs(t, "deployment", args)
			deployments[target] = true
			if cfgPath != "/etc/pwsync/pwsync.yaml" {
				t.Errorf("%s: config %s", target, cfgPath)
			}
			for _, p := range c["ports"].([]any) {
				if cp := fmt.Sprint(p.(map[string]any)["containerPort"]); !slices.Contains(exposed, cp) {
					t.Errorf("%s: containerPort %s not EXPOSEd by the image", target, cp)
				}
			}
			if get(c, "readinessProbe.httpGet.path") != "/readyz" || get(c, "livenessProbe.httpGet.path") != "/healthz" {
				t.Errorf("%s: probes must use /readyz and /healthz", target)
			}
			if get(m, "spec.template.spec.securityContext.runAsNonRoot") != true || get(c, "securityContext.readOnlyRootFilesystem") != true {
				t.Errorf("%s: must run as non-root on a read-only root", target)
			}
		}
	}
	for _, target := range []string{"ingest", "evaluator", "actuator"} {
		if !deployments[target] {
			t.Errorf("no Deployment for %s", target)
		}
	}
	if cfgText == "" {
		t.Fatal("no rendered pwsync.yaml in the ConfigMap")
	}
	cfg := loadConfig(t, "helm config", []byte(cfgText), "/run/secrets/pwsync", config.AllTargets)
	if cfg.NATS.URL != "nats://rel-nats:4222" || cfg.NATS.Replicas != 3 {
		t.Errorf("helm config must use the nats subchart's service with R3: %q R%d", cfg.NATS.URL, cfg.NATS.Replicas)
	}
	if p := port(t, cfg.Ops.Listen); p != "9090" {
		t.Errorf("ops.listen port %s: the probes and scrape annotations use 9090", p)
	}
}

// unit parses a systemd unit into section -> key -> values.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(read(t, path)))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, l)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnits(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("systemd", "*.service"))
	if len(files) == 0 {
		t.Fatal("no systemd units")
	}
	for _, f := range files {
		u := unit(t, f)
		for _, s := range []string{"Unit", "Service", "Install"} {
			if u[s] == nil {
				t.Errorf("%s: no [%s]", f, s)
			}
		}
		svc := u["Service"]
		for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
			"PrivateTmp": "yes", "StateDirectory": "pwsync", "KillSignal": "SIGTERM"} {
			if !slices.Contains(svc[k], want) {
				t.Errorf("%s: want %s=%s, got %v", f, k, want, svc[k])
			}
		}
		if len(svc["User"]) == 0 && !slices.Contains(svc["DynamicUser"], "yes") {
			t.Errorf("%s: runs as root (no User= or DynamicUser=yes)", f)
		}
		for _, key := range []string{"ExecStartPre", "ExecStart"} {
			for _, line := range svc[key] {
				f := strings.Fields(line)
				if f[0] != "/usr/local/bin/pwsync" {
					t.Errorf("%s: %s runs %s", key, key, f[0])
				}
				args := f[1:]
				if args[0] == "config" { // `config check` takes run's flags
					args = args[1:]
					args[0] = "config"
				}
				for i, a := range args {
					if a == "%i" {
						args[i] = "ingest" // every instance name is a target
					}
				}
				checkRunArgs(t, key, args)
			}
		}
		// The data dir of the example config is the unit's StateDirectory.
		cfg := loadConfig(t, "example", read(t, filepath.Join("config", "pwsync.example.yaml")), "/etc/pwsync", config.AllTargets)
		if !strings.HasPrefix(cfg.NATS.Embedded.DataDir, "/var/lib/pwsync") {
			t.Errorf("example nats.embedded.data_dir %s is outside StateDirectory=/var/lib/pwsync (ProtectSystem=strict)", cfg.NATS.Embedded.DataDir)
		}
	}
}
