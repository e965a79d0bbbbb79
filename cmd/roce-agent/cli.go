package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/pflag"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

type command struct {
	name    string
	summary string
	run     func(env *cliEnv) error
	// desired: the command converges the host, so it refuses to start
	// without a desired state (a config file with rails or qos).
	desired bool
}

var commands = []command{
	{"inventory", "print GPUs, RDMA NICs, their PCIe affinity and the rails", runInventory, false},
	{"run", "run the daemon: keep rails converged, serve /metrics, /healthz, /readyz, /v1/status", runDaemon, true},
	{"plan", "print the link and QoS changes apply would make (changes nothing)", runPlan, true},
	{"apply", "converge every rail (links, then QoS) once and exit (non-zero if a rail did not converge)", runApply, true},
	{"teardown", "print, then remove, every address, rule and route roce-agent owns (--dry-run: print only)", runTeardown, false},
	{"version", "print the version", runVersion, false},
}

// cliEnv is what a subcommand gets: the loaded config and where to write.
type cliEnv struct {
	flags  *pflag.FlagSet
	cfg    agent.Config
	output string
	stdout io.Writer
	log    *slog.Logger
	// nvml is used when the inventory reads the live /sys.
	nvml func() nvml.Interface
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	code, err := runE(args, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "roce-agent: %v\n", clipLines(err))
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "run 'roce-agent --help' for usage")
			return exitUsage
		}
		var ce *configError
		if errors.As(err, &ce) {
			return exitUsage
		}
	}
	return code
}

func newFlagSet(stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("roce-agent", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", "", "YAML config file (keys in docs/config.md; default $ROCE_AGENT_CONFIG, else "+DefaultConfigPath+")")
	fs.String("sysfs-root", nic.DefaultRoot, "sysfs tree to read (a host mount or a fixture tree)")
	fs.StringP("output", "o", "table", "output format: table or json")
	fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.String("log-format", "auto", "log format: auto (json under systemd or Kubernetes), text or json")
	fs.String("listen", "", "run: address for /metrics, /healthz, /readyz, /v1/status (default listen.metrics, "+agent.DefaultConfig().Listen.Metrics+")")
	fs.Bool("dry-run", false, "teardown: print what would be removed, remove nothing")
	fs.BoolP("help", "h", false, "show this help")
	fs.SortFlags = false
	fs.Usage = func() {}
	return fs
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: roce-agent [flags] <command>\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
	fmt.Fprintf(w, "\nEvery config key can also be set as ROCE_AGENT_<KEY> (dots become underscores).\n")
}

func runE(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlagSet(stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage, &usageError{err.Error()}
	}
	if help, _ := fs.GetBool("help"); help {
		usage(stdout, fs)
		return exitOK, nil
	}
	rest := fs.Args()
	if len(rest) == 0 {
		usage(stderr, fs)
		return exitUsage, &usageError{"no command given"}
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == rest[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		names := make([]string, len(commands))
		for i, c := range commands {
			names[i] = c.name
		}
		return exitUsage, &usageError{fmt.Sprintf("unknown command %q (commands: %s)", rest[0], strings.Join(names, ", "))}
	}
	if len(rest) > 1 {
		return exitUsage, &usageError{fmt.Sprintf("%s: unexpected argument %q", cmd.name, rest[1])}
	}
	output, _ := fs.GetString("output")
	if output != "table" && output != "json" {
		return exitUsage, &usageError{fmt.Sprintf("--output: %q is not one of table, json", output)}
	}
	cfg, err := loadConfig(fs, cmd.desired)
	if err != nil {
		return exitUsage, err
	}
	logger, err := newLogger(stderr, cfg.Log)
	if err != nil {
		return exitError, err
	}
	env := &cliEnv{flags: fs, cfg: cfg, output: output, stdout: stdout, log: logger, nvml: func() nvml.Interface { return nvml.New() }}
	if err := cmd.run(env); err != nil {
		return exitError, err
	}
	return exitOK, nil
}

func newLogger(w io.Writer, c agent.LogConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "auto" {
		format = "text"
		// systemd sets JOURNAL_STREAM for a service's stderr; Kubernetes
		// sets KUBERNETES_SERVICE_HOST in every pod.
		if os.Getenv("JOURNAL_STREAM") != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			format = "json"
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func runInventory(env *cliEnv) error {
	inv, err := agent.ReadInventory(env.cfg, env.nvml)
	if err != nil {
		return err
	}
	env.log.Debug("inventory read", "sysfs_root", inv.SysfsRoot, "gpus", len(inv.GPUs), "nics", len(inv.NICs), "rails", len(inv.Rails), "warnings", len(inv.Warnings))
	if env.output == "json" {
		return inv.WriteJSON(env.stdout)
	}
	return inv.WriteTable(env.stdout)
}

func runVersion(env *cliEnv) error {
	info := versionInfo()
	if env.output == "json" {
		return agent.WriteJSON(env.stdout, info)
	}
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(env.stdout, "roce-agent %s\n", info["version"])
	for _, k := range keys {
		if k != "version" {
			fmt.Fprintf(env.stdout, "  %s: %s\n", k, info[k])
		}
	}
	return nil
}

// openNode opens the pipeline on this process's network namespace.
func openNode(env *cliEnv) (*agent.Node, error) {
	for _, w := range env.cfg.QoSWarnings() {
		env.log.Warn("qos profile", "warning", w)
	}
	return agent.OpenNode(agent.NodeOptions{Config: env.cfg, Netns: netns.None(), NVML: env.nvml, Log: env.log})
}

func runPlan(env *cliEnv) error {
	node, err := openNode(env)
	if err != nil {
		return err
	}
	defer node.Close()
	report, err := node.Plan()
	if err != nil {
		return err
	}
	return report.Write(env.stdout, env.output)
}

// lockState takes the state directory's lock for a command that changes
// the host; a second daemon, apply or teardown fails here, before any
// change.
func lockState(env *cliEnv, command string) (*agent.StateLock, error) {
	return agent.LockStateDir(env.cfg.StateDir, command)
}

// withLockedNode runs fn on the pipeline while holding the state
// directory's lock: the commands that change the host.
func withLockedNode(env *cliEnv, command string, fn func(*agent.Node) error) error {
	lock, err := lockState(env, command)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	node, err := openNode(env)
	if err != nil {
		return err
	}
	defer node.Close()
	return fn(node)
}

func runApply(env *cliEnv) error {
	return withLockedNode(env, "apply", func(node *agent.Node) error { return applyNode(env, node) })
}

func applyNode(env *cliEnv, node *agent.Node) error {
	applied, err := node.Apply()
	if err != nil {
		return err
	}
	applied.Log(env.log)
	report := applied.Report()
	for _, rr := range report.Rails {
		env.log.Info("rail applied", "rail", rr.Rail, "netdev", rr.Netdev, "converged", rr.Converged, "changes", len(rr.Applied))
	}
	if err := report.Write(env.stdout, env.output); err != nil {
		return err
	}
	if !report.Converged {
		if err := applied.Link.Err(); err != nil {
			return err
		}
		return errors.New("not every rail converged (see above)")
	}
	return nil
}

// runTeardown prints every object the agent owns, then (without
// --dry-run) removes exactly those: the only command that removes state
// without a desired rail.
func runTeardown(env *cliEnv) error {
	return withLockedNode(env, "teardown", func(node *agent.Node) error { return teardownNode(env, node) })
}

func teardownNode(env *cliEnv, node *agent.Node) error {
	dryRun, _ := env.flags.GetBool("dry-run")
	res, err := node.Teardown(dryRun)
	if err != nil {
		return err
	}
	for _, c := range res.Removed {
		env.log.Info("removed", "object", c)
	}
	report := agent.NewTeardownReport(res, dryRun)
	if err := report.Write(env.stdout, env.output); err != nil {
		return err
	}
	if len(res.Errs) > 0 {
		return fmt.Errorf("teardown incomplete: %w", errors.Join(res.Errs...))
	}
	return nil
}

// fileSource is the daemon's configuration source: the config file (and
// env and flags), read again on SIGHUP.
type fileSource struct{ flags *pflag.FlagSet }

func (f fileSource) Load() (agent.Config, error) { return loadConfig(f.flags, true) }
func (fileSource) Changed() <-chan struct{}      { return nil }

func runDaemon(env *cliEnv) error {
	cfg := env.cfg
	lock, err := lockState(env, "run")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	source := fileSource{env.flags}
	d, err := agent.NewDaemon(agent.DaemonOptions{
		Config: cfg, Version: versionInfo()["version"], Log: env.log, NVML: env.nvml, Source: source, Lock: lock,
		Netns: netns.None(), Debounce: cfg.Reconcile.Debounce, Resync: cfg.Reconcile.ResyncInterval,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			_ = d.Reload(source.Load)
		}
	}()
	return d.Run(ctx, cfg.Listen.Metrics)
}
