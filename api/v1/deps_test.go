package v1_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const pkg = "github.com/roce-agent/roce-agent/api/v1"

// goTool finds the go command that runs the tests.
func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to list dependencies with")
	}
	return p
}

func goCmd(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(goTool(t), args...)
	cmd.Dir = filepath.Join("..", "..") // the module root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The wire package is plain data: the standard library only (no package of
// this module, no cgo, netlink, rdmamap or NVML), so that any client can
// build it anywhere.
func TestDepsStandardLibraryOnly(t *testing.T) {
	// Packages outside the standard library the package may import, with
	// the reason. None.
	allowed := map[string]string{}
	out := goCmd(t, []string{"CGO_ENABLED=0"}, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
	for _, dep := range strings.Fields(out) {
		if dep == pkg {
			continue
		}
		if _, ok := allowed[dep]; !ok {
			t.Errorf("api/v1 depends on %s, outside the standard library", dep)
		}
	}
	// With cgo available, nothing it imports uses it either.
	out = goCmd(t, []string{"CGO_ENABLED=1"}, "list", "-deps", "-f", "{{.ImportPath}} {{len .CgoFiles}}", pkg)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, n, _ := strings.Cut(line, " ")
		if name == "runtime/cgo" || n != "0" {
			t.Errorf("api/v1 pulls in cgo through %s (%s cgo files)", name, n)
		}
	}
}

func TestDepsBuildWithoutCgo(t *testing.T) {
	goCmd(t, []string{"CGO_ENABLED=0"}, "build", "./api/...")
}

// The agent talks to the controller over api/v1 and HTTP only: it never
// links the controller's store (etcd, gRPC, ~34 MB), nor the controller
// package.
func TestAgentDoesNotLinkTheController(t *testing.T) {
	for _, dep := range strings.Fields(goCmd(t, nil, "list", "-deps", "./cmd/roce-agent")) {
		if strings.HasPrefix(dep, "go.etcd.io/") || strings.HasPrefix(dep, "google.golang.org/grpc") ||
			dep == "github.com/roce-agent/roce-agent/controller" {
			t.Errorf("roce-agent links %s", dep)
		}
	}
}
