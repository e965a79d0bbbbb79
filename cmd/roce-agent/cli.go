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
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/qos"
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
		fmt.Fprintf(stderr, "roce-agent: %v\n", err)
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

// inventory reads the node inventory. netdevExists looks pinned netdevs up
// in the rails' namespace (netlink) for the commands that change links;
// nil reads the tree's /class/net (a fixture tree is read alone) or, on the
// live host, asks netlink too.
func inventory(env *cliEnv, netdevExists func(string) bool) (*agent.Inventory, error) {
	sysfs, err := nic.NewFS(env.cfg.SysfsRoot)
	if err != nil {
		return nil, err
	}
	opts := agent.InventoryOptions{Node: env.cfg.Node.Name, FS: sysfs, Pins: env.cfg.Pins(), NetdevExists: netdevExists}
	if sysfs.IsHost() {
		// The live host: ask NVML, and name the node after the host. A tree
		// is read alone: no NVML, no host files.
		opts.NVML = env.nvml()
		if opts.Node == "" {
			opts.Node, _ = os.Hostname()
		}
		if opts.NetdevExists == nil {
			opts.NetdevExists = func(name string) bool { _, err := netlink.LinkByName(name); return err == nil }
		}
	}
	return agent.DiscoverInventory(opts)
}

func runInventory(env *cliEnv) error {
	inv, err := inventory(env, nil)
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

// engines reads the inventory, derives the desired rail links and opens
// the link engine and, when the config has a qos section, the QoS engine
// on this process's network namespace.
type engines struct {
	link      *nic.LinkEngine
	desired   []nic.RailLink
	unmanaged []string
	qos       *qos.Engine
	profile   qos.Profile
	targets   []qos.Target
	close     func()
}

func openEngines(env *cliEnv) (*engines, error) {
	host, err := nic.OpenHost(netns.None())
	if err != nil {
		return nil, err
	}
	// Pinned netdevs exist when netlink says so, in every command.
	inv, err := inventory(env, host.LinkExists)
	if err != nil {
		host.Close()
		return nil, err
	}
	desired, unmanaged, err := agent.DesiredLinks(env.cfg, inv)
	if err != nil {
		host.Close()
		return nil, err
	}
	e := &engines{
		link:      &nic.LinkEngine{Host: host, StateDir: env.cfg.StateDir, Range: env.cfg.LinkRange()},
		desired:   desired,
		unmanaged: unmanaged,
		close:     host.Close,
	}
	profile, _ := env.cfg.QoSProfile()
	if !profile.Empty() {
		fs, err := nic.NewFS(inv.SysfsRoot)
		if err != nil {
			host.Close()
			return nil, err
		}
		e.qos = &qos.Engine{Files: fs}
		if sock, err := qos.OpenSocket(); err != nil {
			e.qos.DCBErr = err
		} else {
			e.qos.DCB = qos.NewDCB(sock)
			e.close = func() { sock.Close(); host.Close() }
		}
		e.profile, e.targets = profile, agent.QoSTargets(inv)
	}
	for _, w := range env.cfg.QoSWarnings() {
		env.log.Warn("qos profile", "warning", w)
	}
	return e, nil
}

func runPlan(env *cliEnv) error {
	e, err := openEngines(env)
	if err != nil {
		return err
	}
	defer e.close()
	plan, err := e.link.Plan(e.desired)
	if err != nil {
		return err
	}
	report := agent.NewPlanReport(e.desired, plan, e.unmanaged)
	if e.qos != nil {
		report.AddQoS(e.qos.Plan(e.profile, e.targets))
	}
	return report.Write(env.stdout, env.output)
}

// lockState takes the state directory's lock for a command that changes
// the host; a second daemon, apply or teardown fails here, before any
// change.
func lockState(env *cliEnv, command string) (*agent.StateLock, error) {
	return agent.LockStateDir(env.cfg.StateDir, command)
}

func runApply(env *cliEnv) error {
	lock, err := lockState(env, "apply")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	e, err := openEngines(env)
	if err != nil {
		return err
	}
	defer e.close()
	res, err := e.link.Reconcile(e.desired)
	if err != nil {
		return err
	}
	report := agent.NewApplyReport(res, e.unmanaged)
	if e.qos != nil {
		plan := e.qos.Plan(e.profile, e.targets)
		report.AddQoS(plan, e.qos.Apply(plan))
	}
	for _, rr := range report.Rails {
		env.log.Info("rail applied", "rail", rr.Rail, "netdev", rr.Netdev, "converged", rr.Converged, "changes", len(rr.Applied))
	}
	if err := report.Write(env.stdout, env.output); err != nil {
		return err
	}
	if !report.Converged {
		if err := res.Err(); err != nil {
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
	dryRun, _ := env.flags.GetBool("dry-run")
	lock, err := lockState(env, "teardown")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	host, err := nic.OpenHost(netns.None())
	if err != nil {
		return err
	}
	defer host.Close()
	eng := &nic.LinkEngine{Host: host, StateDir: env.cfg.StateDir, Range: env.cfg.LinkRange()}
	res, err := eng.Teardown(dryRun)
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

func runDaemon(env *cliEnv) error {
	cfg := env.cfg
	if cfg.Node.Name == "" && cfg.SysfsRoot == nic.DefaultRoot {
		cfg.Node.Name, _ = os.Hostname()
	}
	lock, err := lockState(env, "run")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	d, err := agent.NewDaemon(agent.DaemonOptions{
		Config: cfg, Version: versionInfo()["version"], Log: env.log, NVML: env.nvml,
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
			_ = d.Reload(func() (agent.Config, error) {
				next, err := loadConfig(env.flags, true)
				if err == nil && next.Node.Name == "" && next.SysfsRoot == nic.DefaultRoot {
					next.Node.Name, _ = os.Hostname()
				}
				return next, err
			})
		}
	}()
	return d.Run(ctx, cfg.Listen.Metrics)
}
