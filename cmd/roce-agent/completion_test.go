package main

import (
	"strings"
	"testing"
)

// TestCompletionScripts: `completion bash|zsh|fish` print a script for
// roce-agent on stdout.
func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "complete -o default -F __start_roce-agent roce-agent", "zsh": "#compdef roce-agent", "fish": "complete -c roce-agent"} {
		code, out, errOut := runCLI(t, "completion", shell)
		if code != 0 || errOut != "" || len(out) < 500 || !strings.Contains(out, "roce-agent") || !strings.Contains(out, marker) {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes without %q", shell, code, errOut, len(out), marker)
		}
	}
	code, out, _ := runCLI(t, "completion", "bash", "--help")
	if code != 0 || !strings.Contains(out, "roce-agent completion bash") {
		t.Errorf("completion bash --help: exit %d\n%s", code, out)
	}
	code, _, errOut := runCLI(t, "completion", "tcsh")
	if code != 2 || !strings.Contains(errOut, `roce-agent: completion: unknown shell "tcsh" (bash, zsh, fish, powershell)`) {
		t.Errorf("completion tcsh: exit %d, stderr %q", code, errOut)
	}
}

// TestCompletions: what the scripts ask for: the commands, the flags and
// the values of --output, --log-level and --log-format.
func TestCompletions(t *testing.T) {
	complete := func(args ...string) []string {
		t.Helper()
		code, out, errOut := runCLI(t, append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %q: exit %d, stderr %q", args, code, errOut)
		}
		var words []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(line, ":") { // the last line is the directive
				word, _, _ := strings.Cut(line, "\t")
				words = append(words, word)
			}
		}
		return words
	}
	has := func(got []string, want ...string) bool {
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				return false
			}
		}
		return true
	}
	if got := complete(""); !has(got, "inventory", "run", "plan", "apply", "teardown", "version", "completion", "help") {
		t.Errorf("commands: %q", got)
	}
	if got := complete("ap"); len(got) != 1 || got[0] != "apply" {
		t.Errorf("ap: %q", got)
	}
	if got := complete("plan", "-o", ""); !has(got, "table", "json") || len(got) != 2 {
		t.Errorf("plan -o: %q", got)
	}
	if got := complete("--log-level", ""); !has(got, "debug", "info", "warn", "error") {
		t.Errorf("--log-level: %q", got)
	}
	if got := complete("teardown", "--"); !has(got, "--dry-run", "--config", "--sysfs-root", "--output") {
		t.Errorf("teardown --: %q", got)
	}
	if got := complete("plan", "--"); has(got, "--dry-run") {
		t.Errorf("plan offers teardown's --dry-run: %q", got)
	}
}

func TestCompletionWithoutShell(t *testing.T) {
	code, out, errOut := runCLI(t, "completion")
	if code != 2 || out != "" || !strings.Contains(errOut, "roce-agent: completion: no shell given (bash, zsh, fish, powershell)") || !strings.Contains(errOut, "roce-agent completion [command]") {
		t.Errorf("completion: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
