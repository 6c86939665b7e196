package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// composeFile is the part of a compose file these tests read (short syntax of ports and volumes,
// the map form of environment).
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Args       map[string]string `yaml:"args"`
	} `yaml:"build"`
	NetworkMode string            `yaml:"network_mode"`
	Ports       []string          `yaml:"ports"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
}

// composeDir is where deploy/compose.yaml lives; its relative paths start there.
const composeDir = "deploy"

// operatorDirs are the directories of deploy/compose.yaml that the operator fills and the
// repository does not hold (both are in .gitignore and .dockerignore): the certificates
// (deploy/trial-certs.sh makes a throw-away set) and authorized_keys.
var operatorDirs = []string{"tls", "keys"}

// published is one entry of a service's ports.
type published struct {
	hostIP, hostPort, containerPort, proto string
}

// parsePort reads the short syntax "[host_ip:]host_port:container_port[/proto]".
func parsePort(t *testing.T, s string) published {
	t.Helper()
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	parts := strings.Split(spec, ":")
	var p published
	switch len(parts) {
	case 2:
		p = published{hostPort: parts[0], containerPort: parts[1]}
	case 3:
		p = published{hostIP: parts[0], hostPort: parts[1], containerPort: parts[2]}
	default:
		t.Fatalf("port %q: want [host_ip:]host_port:container_port[/proto] (a port published on the host, explicitly)", s)
	}
	p.proto = proto
	return p
}

// containerfile is what the tests read of deploy/Containerfile.
type containerfile struct {
	text         string            // without comments, continuation lines joined
	args         map[string]string // ARG defaults
	env          map[string]string
	copies       map[string]string // COPY destination -> source (build context files only)
	expose       []string
	configPath   string // --config of CMD
	xcaddyBuilds []string
}

func readContainerfile(t *testing.T, file string) containerfile {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cf := containerfile{args: map[string]string{}, env: map[string]string{}, copies: map[string]string{}}
	var lines []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, strings.TrimSpace(cur.String()))
		cur.Reset()
	}
	cf.text = strings.Join(lines, "\n")
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		fields := strings.Fields(rest)
		switch strings.ToUpper(instr) {
		case "ARG":
			if k, v, ok := strings.Cut(rest, "="); ok {
				cf.args[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		case "ENV":
			for _, f := range fields {
				if k, v, ok := strings.Cut(f, "="); ok {
					cf.env[k] = v
				}
			}
		case "COPY":
			if len(fields) == 2 {
				cf.copies[fields[1]] = fields[0]
			}
		case "EXPOSE":
			cf.expose = append(cf.expose, fields...)
		case "CMD":
			var cmd []string
			if err := json.Unmarshal([]byte(rest), &cmd); err != nil {
				t.Fatalf("Containerfile CMD %s: not the exec form: %v", rest, err)
			}
			if i := slices.Index(cmd, "--config"); i >= 0 && i+1 < len(cmd) {
				cf.configPath = cmd[i+1]
			}
		case "RUN":
			if strings.Contains(rest, "xcaddy build") {
				cf.xcaddyBuilds = append(cf.xcaddyBuilds, rest)
			}
		}
	}
	return cf
}

// goModCaddyVersion is the version of github.com/caddyserver/caddy/v2 that go.mod requires.
func goModCaddyVersion(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("go.mod requires no github.com/caddyserver/caddy/v2")
	}
	return m[1]
}

// caddyfileVar matches a Caddyfile's environment placeholders: {$NAME}, {$NAME:default} (parse
// time) and {env.NAME} (run time).
var caddyfileVar = regexp.MustCompile(`\{\$([A-Za-z0-9_]+)(:[^}]*)?\}|\{env\.([A-Za-z0-9_]+)\}`)

// caddyfileComment matches a Caddyfile comment: from a "#" at the start of a line or after a
// space to the end of the line.
var caddyfileComment = regexp.MustCompile(`(?m)(^|\s)#.*$`)

// caddyfileVars lists the variables the Caddyfile text reads (comments left out), each with
// whether some use of it has a default.
func caddyfileVars(text string) map[string]bool {
	out := map[string]bool{}
	for _, m := range caddyfileVar.FindAllStringSubmatch(caddyfileComment.ReplaceAllString(text, ""), -1) {
		name, hasDefault := m[1], m[2] != ""
		if name == "" {
			name = m[3]
		}
		out[name] = out[name] || hasDefault
	}
	return out
}

// TestComposeDeployment proves that deploy/compose.yaml and deploy/Containerfile make a gateway
// that can work: checked against the Caddyfile baked into the image, adapted by the binary with
// the environment compose and the image set.
//
//   - The gateway shares the node's network namespace (so 127.0.0.1 upstreams are the node's),
//     or else sets every NUTS_NODE_* upstream.
//   - Every port a site of the Caddyfile listens on is published (on the service that owns the
//     namespace), TCP only; the internal site's only on the host's 127.0.0.1; every listener
//     binds the container's interfaces, so the published port reaches it. No service publishes
//     anything over UDP, no server speaks HTTP/3, EXPOSE names no UDP port.
//   - No mount hides the baked Caddyfile; the directories NUTSGATE_TLS, NUTSGATE_CONFIG and
//     NUTSGATE_STATE name are mounted; every variable the Caddyfile reads without a default is
//     set.
//   - Every bind-mounted path exists in the repository or is an operator directory
//     (operatorDirs), and the certificate files mounted from it are ones deploy/trial-certs.sh
//     makes.
//   - The Caddy version of the image build (the Containerfile's ARG default and compose's build
//     argument) is go.mod's, and xcaddy builds that version, never "latest".
func TestComposeDeployment(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose composeFile
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}

	// The gateway: the service built from deploy/Containerfile.
	var gwName string
	for name, s := range compose.Services {
		if s.Build.Dockerfile != "" && filepath.Clean(filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)) == filepath.Join("deploy", "Containerfile") {
			gwName = name
		}
	}
	if gwName == "" {
		t.Fatal("deploy/compose.yaml: no service is built from deploy/Containerfile (build.context .., dockerfile deploy/Containerfile)")
	}
	gw := compose.Services[gwName]
	cf := readContainerfile(t, filepath.Join(root, "deploy", "Containerfile"))

	// The Caddy version.
	caddyVersion := goModCaddyVersion(t, root)
	if got := cf.args["CADDY_VERSION"]; got != caddyVersion {
		t.Errorf("deploy/Containerfile: ARG CADDY_VERSION=%q, want go.mod's %s", got, caddyVersion)
	}
	if got, ok := gw.Build.Args["CADDY_VERSION"]; ok && got != caddyVersion {
		t.Errorf("deploy/compose.yaml: build arg CADDY_VERSION %q, want go.mod's %s", got, caddyVersion)
	}
	if len(cf.xcaddyBuilds) == 0 {
		t.Error("deploy/Containerfile: no RUN ... xcaddy build")
	}
	for _, run := range cf.xcaddyBuilds {
		if !strings.Contains(run, `xcaddy build "$CADDY_VERSION"`) {
			t.Errorf("deploy/Containerfile: %q does not build \"$CADDY_VERSION\"", run)
		}
	}
	if strings.Contains(strings.ToLower(cf.text), "latest") {
		t.Error("deploy/Containerfile names \"latest\"; every version is pinned")
	}

	// The baked Caddyfile, and mounts that would hide it.
	if cf.configPath == "" {
		t.Fatal("deploy/Containerfile: CMD has no --config")
	}
	baked, ok := cf.copies[cf.configPath]
	if !ok {
		t.Fatalf("deploy/Containerfile: nothing is copied to %s, the --config of CMD", cf.configPath)
	}
	caddyfileText, err := os.ReadFile(filepath.Join(root, baked))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, v := range gw.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Errorf("service %s: volume %q has no target", gwName, v)
			continue
		}
		target := path.Clean(parts[1])
		targets[target] = true
		if target == cf.configPath || strings.HasPrefix(cf.configPath, target+"/") {
			t.Errorf("service %s: volume %q hides the Caddyfile baked in at %s", gwName, v, cf.configPath)
		}
	}

	// The environment: the image's, then compose's.
	env := maps2(cf.env, gw.Environment)
	for _, v := range []string{"NUTSGATE_TLS", "NUTSGATE_CONFIG", "NUTSGATE_STATE"} {
		if dir := env[v]; dir == "" || !targets[path.Clean(dir)] {
			t.Errorf("service %s: %s=%q is not a mounted directory (mounts: %v)", gwName, v, dir, gw.Volumes)
		}
	}
	for name, hasDefault := range caddyfileVars(string(caddyfileText)) {
		if !hasDefault && env[name] == "" {
			t.Errorf("%s reads {$%s} (no default), which neither the image nor compose sets", baked, name)
		}
	}

	// Who publishes the gateway's ports.
	owner, ownerName := gw, gwName
	if other, ok := strings.CutPrefix(gw.NetworkMode, "service:"); ok {
		if owner, ok = compose.Services[other]; !ok {
			t.Fatalf("service %s: network_mode %q names no service", gwName, gw.NetworkMode)
		}
		ownerName = other
		if len(gw.Ports) > 0 {
			t.Errorf("service %s shares %s's network namespace and cannot publish ports (%v); %s does", gwName, other, gw.Ports, other)
		}
	} else {
		for _, v := range []string{"NUTS_NODE_PUBLIC", "NUTS_NODE_INTERNAL", "NUTS_NODE_GRPC"} {
			if h, _, err := net.SplitHostPort(env[v]); err != nil || net.ParseIP(h).IsLoopback() || h == "localhost" {
				t.Errorf("service %s has a network namespace of its own but %s=%q: the container's own loopback, where no node listens", gwName, v, env[v])
			}
		}
	}
	var ports []published
	for _, p := range owner.Ports {
		ports = append(ports, parsePort(t, p))
	}
	for name, s := range compose.Services {
		for _, p := range s.Ports {
			if parsePort(t, p).proto != "tcp" {
				t.Errorf("service %s publishes %q: TCP only (HTTP/3 is off, nothing listens on UDP)", name, p)
			}
		}
	}
	for _, e := range cf.expose {
		if !strings.HasSuffix(e, "/tcp") {
			t.Errorf("deploy/Containerfile: EXPOSE %s, want each port as <port>/tcp (nothing listens on UDP)", e)
		}
	}

	// The listeners of the baked Caddyfile, adapted with compose's environment. The paths point
	// at test files (adapt reads none of them); everything else is compose's and the image's.
	e := newShippedEnv(t)
	var extra []string
	for k, v := range env {
		if !slices.Contains([]string{"NUTSGATE_TLS", "NUTSGATE_CONFIG", "NUTSGATE_STATE", "XDG_DATA_HOME", "XDG_CONFIG_HOME"}, k) {
			extra = append(extra, k+"="+v)
		}
	}
	res := runBinIn(t, cliTimeout, "", e.environ(t, extra...), "adapt", "--config", filepath.Join(root, baked))
	var adapted jsonObj
	if err := json.Unmarshal([]byte(res.stdout), &adapted); res.code != 0 || err != nil {
		t.Fatalf("nutsgate adapt --config %s: exit status %d, %v\nstderr: %s", baked, res.code, err, res.stderr)
	}
	servers := asObj(asObj(asObj(adapted["apps"])["http"])["servers"])
	if len(servers) == 0 {
		t.Fatal("the adapted Caddyfile has no servers")
	}
	for name, s := range servers {
		srv := asObj(s)
		if protos := asStrings(srv["protocols"]); len(protos) == 0 || slices.Contains(protos, "h3") {
			t.Errorf("server %s: protocols %v, want h1 h2 only (no HTTP/3, no UDP)", name, protos)
		}
		internal := false
		for _, st := range sites(jsonObj{"apps": jsonObj{"http": jsonObj{"servers": jsonObj{name: srv}}}}) {
			if handlerIndex(flatten(st.route, false), "authentication", nil) >= 0 {
				internal = true
			}
		}
		for _, listen := range asStrings(srv["listen"]) {
			host, port, err := net.SplitHostPort(listen)
			if err != nil {
				t.Errorf("server %s: listen %q: %v", name, listen, err)
				continue
			}
			if host != "" && !net.ParseIP(host).IsUnspecified() {
				t.Errorf("server %s listens on %s: inside the container that is not reachable through a published port (set its bind from the environment)", name, listen)
			}
			var found []published
			for _, p := range ports {
				if p.containerPort == port && p.proto == "tcp" {
					found = append(found, p)
				}
			}
			if len(found) == 0 {
				t.Errorf("server %s listens on %s, but service %s publishes no TCP port %s (ports %v)", name, listen, ownerName, port, owner.Ports)
			}
			for _, p := range found {
				if internal && p.hostIP != "127.0.0.1" {
					t.Errorf("server %s is the internal site (token_v2) and is published as %+v: only on the host's 127.0.0.1", name, p)
				}
			}
		}
	}

	// Bind mounts: in the repository, or an operator directory.
	trial := t.TempDir()
	runTrialCerts(t, root, trial)
	for name, s := range compose.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := compose.Volumes[src]; !ok {
					t.Errorf("service %s: volume %q names no top-level volume", name, v)
				}
				continue
			}
			rel := filepath.Clean(filepath.Join(composeDir, src))
			if dir, rest, ok := strings.Cut(filepath.ToSlash(strings.TrimPrefix(filepath.Clean(src), "./")), "/"); slices.Contains(operatorDirs, dir) || slices.Contains(operatorDirs, filepath.Clean(src)) {
				if ok && dir == "tls" {
					if _, err := os.Stat(filepath.Join(trial, rest)); err != nil {
						t.Errorf("service %s mounts %s, which deploy/trial-certs.sh does not make: %v", name, src, err)
					}
				}
				continue
			}
			if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
				t.Errorf("service %s mounts %s (%s), which is not in the repository: %v", name, src, rel, err)
			}
		}
	}
}

// maps2 is a merged with b (b wins).
func maps2(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// dockerignored reports whether the .dockerignore patterns exclude name (a slash-separated path
// relative to the context): the last matching pattern decides, "!" re-includes; a pattern matches
// the path or a directory above it; a leading "**/" matches at any depth.
func dockerignored(patterns []string, name string) bool {
	matches := func(pattern, p string) bool {
		pattern = strings.TrimPrefix(path.Clean(pattern), "/")
		var tries []string
		parts := strings.Split(p, "/")
		for i := range parts {
			tries = append(tries, strings.Join(parts[:i+1], "/")) // the path and the directories above it
		}
		for _, try := range tries {
			if ok, _ := path.Match(pattern, try); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
				tparts := strings.Split(try, "/")
				for i := range tparts {
					if ok, _ := path.Match(rest, strings.Join(tparts[i:], "/")); ok {
						return true
					}
				}
			}
		}
		return false
	}
	ignored := false
	for _, pat := range patterns {
		if neg, ok := strings.CutPrefix(pat, "!"); ok {
			if matches(neg, name) {
				ignored = false
			}
		} else if matches(pat, name) {
			ignored = true
		}
	}
	return ignored
}

// TestComposeDockerignore proves that .dockerignore keeps out of the build context of
// deploy/Containerfile the repository's history, private keys and certificates wherever they
// are, the operator directories of compose.yaml, and binaries built in the tree; and keeps in
// what the build needs.
func TestComposeDockerignore(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, name := range []string{
		".git", ".git/config", "alice.key", "alice.key.pub", "quickstart/pki/ca.key", "deploy/tls/network.key",
		"deploy/tls/public.pem", "deploy/keys/authorized_keys", "quickstart/authorized_keys", "nutsgate", "caddy",
		"e2e/e2e.test",
	} {
		if !dockerignored(patterns, name) {
			t.Errorf(".dockerignore does not exclude %s", name)
		}
	}
	for _, name := range []string{"go.mod", "go.sum", "Caddyfile.example", "nutsgate.go", "cmd/nutsgate/main.go", "caddymodule/app.go", "deploy/Containerfile"} {
		if dockerignored(patterns, name) {
			t.Errorf(".dockerignore excludes %s, which the build needs", name)
		}
	}
}
