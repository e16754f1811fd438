package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// modRoot finds the module root above this package.
func modRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatalf("no go.mod above %s", dir)
	return ""
}

// goList returns "importpath: import import …" per package (direct imports or, with deps, all transitive).
func goList(t *testing.T, root string, deps bool, pkgs ...string) map[string][]string {
	t.Helper()
	args := []string{"list", "-e", "-f", `{{.ImportPath}}: {{join .Imports " "}}`}
	if deps {
		args = []string{"list", "-e", "-f", `{{.ImportPath}}: {{join .Deps " "}}`}
	}
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imps, ok := strings.Cut(line, ": ")
		if !ok {
			pkg = strings.TrimSuffix(line, ":")
		}
		m[pkg] = strings.Fields(imps)
	}
	return m
}

func exists(root, pkg string) bool {
	_, err := os.Stat(filepath.Join(root, strings.TrimPrefix(pkg, "natsbench/")))
	return err == nil
}

func TestLeavesDoNotReachGoMLX(t *testing.T) {
	root := modRoot(t)
	var pkgs []string
	for _, p := range []string{"natsbench/sweeps", "natsbench/results", "natsbench/plots", "natsbench/pg19", "natsbench/longbench"} {
		if exists(root, p) {
			pkgs = append(pkgs, p)
		}
	}
	for pkg, deps := range goList(t, root, true, pkgs...) {
		for _, d := range deps {
			if strings.HasPrefix(d, "github.com/gomlx/") {
				t.Errorf("%s reaches %s: the leaf packages must stay free of GoMLX (STYLE.md B1)", pkg, d)
				break
			}
		}
	}
}

func TestImportRules(t *testing.T) {
	root := modRoot(t)
	all := goList(t, root, false, "./...")
	allowed := map[string][]string{ // natsbench imports allowed for these packages (none others)
		"natsbench/sweeps":  {"natsbench/internal/suggest"},
		"natsbench/results": {"natsbench/internal/suggest"},
		"natsbench/plots":   {"natsbench/results"},
	}
	for pkg, imps := range all {
		for _, imp := range imps {
			if !strings.HasPrefix(imp, "natsbench/") {
				continue
			}
			if (imp == "natsbench/experiments" && pkg != "natsbench/runner") || imp == "natsbench/runner" {
				t.Errorf("%s imports %s: only the runner imports experiments, and nothing imports the runner", pkg, imp)
			}
			if pkg == "natsbench/model" && (imp == "natsbench/nats" || imp == "natsbench/policy") {
				t.Errorf("model imports %s: methods reach the model only through model.Masker and kvcache.Evictor", imp)
			}
			if ok, listed := allowed[pkg]; listed {
				found := false
				for _, a := range ok {
					found = found || a == imp
				}
				if !found {
					t.Errorf("%s imports %s (allowed: %v)", pkg, imp, ok)
				}
			}
		}
	}
}
