package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/diag"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/probe"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// exitCodesHelp is the exit status table of the root help and docs/cli.md.
const exitCodesHelp = `Exit status:
  0  success
  1  error: a missing sysfs root, a rail that did not converge, state_dir
     locked by another roce-agent, a teardown that could not remove
     everything, a probe that failed
  2  usage or config error: an unknown command or flag, an unexpected
     argument, a bad --output; a config that is missing, unreadable, empty,
     without a desired state, or invalid. Nothing was changed.`

// cliEnv is what a subcommand gets: the loaded config and where to write.
type cliEnv struct {
	flags  *pflag.FlagSet
	cfg    agent.Config
	output string
	stdout io.Writer
	log    *slog.Logger
	// nvml is used when the inventory reads the live /sys.
	nvml func() nvml.Interface
	// configErr is why the config could not be used; only diag runs
	// without one.
	configErr error
}

// usageError is a command line roce-agent cannot run: exit 2. cmd is the
// command whose help to point at ("roce-agent plan").
type usageError struct{ msg, cmd string }

func (e *usageError) Error() string { return e.msg }

// run executes the command line args and returns the exit status; errors
// are printed to stderr as "roce-agent: <err>".
func run(args []string, stdout, stderr io.Writer) int {
	err := execute(args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	var xs *exitStatus
	if errors.As(err, &xs) {
		return xs.code
	}
	fmt.Fprintf(stderr, "roce-agent: %v\n", clipLines(err))
	var ue *usageError
	if errors.As(err, &ue) {
		cmd := ue.cmd
		if cmd == "" {
			cmd = "roce-agent"
		}
		fmt.Fprintf(stderr, "run '%s --help' for usage\n", cmd)
		return exitUsage
	}
	var ce *configError
	if errors.As(err, &ce) {
		return exitUsage
	}
	return exitError
}

func execute(args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	_, err := root.ExecuteC()
	return err
}

// commandSpec is one subcommand: its help and what it runs.
type commandSpec struct {
	use, short, long, example string
	// changes says what the command changes on the host; exit, its exit
	// statuses. Both end the help text and docs/cli.md's section.
	changes, exit string
	run           func(env *cliEnv) error
	// desired: the command converges the host, so it refuses to start
	// without a desired state (a config file with rails or qos).
	desired bool
}

const exitUsageLine = "2 a usage or config error (nothing was changed)"

var commandSpecs = []commandSpec{
	{
		use:   "inventory",
		short: "Print GPUs, RDMA NICs, their PCIe affinity and the rails",
		long: `Print the host's GPUs, RDMA NICs, the PCIe path between them and the rails
roce-agent derives (one NIC per rail, each GPU on the rail of its closest NIC),
with warnings for anything odd. With --sysfs-root DIR the inventory is read from
that tree alone: no netlink, no NVML, no other host file. The config file is
read when it exists (its rail pins apply); without one the defaults are used.`,
		example: `  # the live host
  roce-agent inventory

  # a saved sysfs tree, as JSON
  roce-agent inventory --sysfs-root testdata/sysfs/dgx-h100/sys -o json

  # with the rail pins of a config file
  roce-agent --config /etc/roce-agent/config.yaml inventory`,
		changes: "nothing.",
		exit:    "0 the inventory was printed; 1 an error (a missing or invalid sysfs root); " + exitUsageLine + ".",
		run:     runInventory,
	},
	{
		use:   "run",
		short: "Run the daemon: keep rails converged, serve /metrics, /healthz, /readyz, /v1/status",
		long: `Run the node agent: converge every rail (links, then QoS), then keep the rails
converged on netlink events and a periodic resync, and serve /metrics,
/healthz, /readyz and /v1/status on --listen (default listen.metrics). SIGHUP
reloads the config file (a refused reload keeps the running config); SIGTERM
or SIGINT stops the daemon. It needs a desired state (a config file with a
rail that has an address, or a qos section) and holds the state_dir lock while
it runs.

With controller.url set the desired state comes from the controller: the
daemon long-polls its config, applies every new generation, reports its
status and a heartbeat, and keeps the last good config in state_dir. When the
controller is unreachable at start it runs on that last good config; with
none it changes nothing, and is not ready, until the controller answers.`,
		example: `  # the daemon, as the systemd unit runs it
  roce-agent --config /etc/roce-agent/config.yaml run

  # desired state from a controller (the file holds the agent's settings)
  ROCE_AGENT_CONTROLLER_URL=https://fabric-ctl:8443 roce-agent run

  # metrics on every address, JSON logs
  roce-agent --config /etc/roce-agent/config.yaml run --listen :9487 --log-format json`,
		changes: "the rails' addresses, source rules, routes, link settings and QoS, like apply, for as long as it runs.",
		exit:    "0 stopped by SIGTERM or SIGINT; 1 an error (state_dir locked by another roce-agent, the listen address in use); " + exitUsageLine + ".",
		run:     runDaemon,
		desired: true,
	},
	{
		use:   "plan",
		short: "Print the link and QoS changes apply would make (changes nothing)",
		long: `Print every link and QoS change apply would make, and every conflict with
state roce-agent does not own (a foreign address where a rail's address should
go, say): "N changes, M conflicts", then one line each. It needs a desired
state, like apply: with controller.url set, the last good controller config
the daemon saved in state_dir (the controller is not asked); without one it
changes nothing and exits 2.`,
		example: `  roce-agent --config /etc/roce-agent/config.yaml plan

  # machine-readable
  roce-agent --config /etc/roce-agent/config.yaml plan -o json`,
		changes: "nothing.",
		exit:    "0 the plan was printed (conflicts included); 1 an error (a reconcile refused, such as rails that came out empty while roce-agent owns state); " + exitUsageLine + ".",
		run:     runPlan,
		desired: true,
	},
	{
		use:   "apply",
		short: "Converge every rail (links, then QoS) once and exit",
		long: `Converge every rail once (links, then QoS) and print what was changed, rail by
rail. A rail that cannot converge (a conflict, a missing netdev) does not stop
the others. It needs a desired state and takes the state_dir lock, so it fails
while the daemon runs. With controller.url set the desired state is the last
good controller config the daemon saved in state_dir (the controller is not
asked); without one it changes nothing and exits 2.`,
		example: `  roce-agent --config /etc/roce-agent/config.yaml apply

  # a JSON report
  roce-agent --config /etc/roce-agent/config.yaml apply -o json`,
		changes: "each rail's addresses, source rules, routes, MTU and link settings and its QoS (trust, PFC, ETS, DSCP mapping); what roce-agent owns is recorded in the kernel objects (protocol 171) and in state_dir.",
		exit:    "0 every rail converged; 1 a rail did not converge, or an error (state_dir locked); " + exitUsageLine + ".",
		run:     runApply,
		desired: true,
	},
	{
		use:   "teardown",
		short: "Print, then remove, every address, rule and route roce-agent owns",
		long: `Print every address, rule and route roce-agent owns on this host, then remove
exactly those (with --dry-run: print only). It is the only command that removes
state without a desired rail, and needs no desired state. It takes the
state_dir lock, so it fails while the daemon runs; --dry-run, which changes
nothing, takes none. With controller.url set the routing table and rule ranges
are those of the last good controller config in state_dir (the defaults
without one, with a warning).`,
		example: `  # what would be removed
  roce-agent --config /etc/roce-agent/config.yaml teardown --dry-run

  # remove it
  roce-agent --config /etc/roce-agent/config.yaml teardown`,
		changes: "removes the objects roce-agent owns and nothing else; with --dry-run, nothing.",
		exit:    "0 everything owned was removed (or listed, with --dry-run); 1 something could not be removed, or an error (state_dir locked); " + exitUsageLine + ".",
		run:     runTeardown,
	},
	{
		use:   "probe",
		short: "Probe one peer now over one rail with ib_write_bw, ib_write_lat or rping",
		long: `Probe a peer now: ask its agent's probe API (over the rail, as the daemon's
scheduled probes do) for a one-shot server on the same rail, run the tool's
client from this rail's RDMA device and GID (found by value), and print the
result. A failure is explained when it can be: the rail is down, the path
drops full-size packets (path MTU), or the tool's own words. The peer must be
one the controller lists for the rail (with controller.url set, the last good
controller config in state_dir is used; the controller is not asked). It needs
listen.probe_api (the peers' port) and the node's certificate (or
probes.insecure_http in a lab). It shares each NIC's probe slot with the
daemon: while the daemon tests the NIC it is refused as busy.`,
		example: `  # bandwidth to gpu-017 on rail 3
  roce-agent --config /etc/roce-agent/config.yaml probe --peer gpu-017 --rail 3

  # RDMA CM reachability over IPv6, as JSON
  roce-agent probe --peer gpu-017 --rail 3 --tool rping --family ipv6 -o json`,
		changes: "nothing on the host; it runs one test over the rail (the peer runs its server).",
		exit:    "0 the probe passed; 1 it failed (the result says why) or could not run; " + exitUsageLine + ".",
		run:     runProbe,
		desired: true,
	},
	{
		use:   "diag",
		short: "Check every known RoCE and GPUDirect failure; say PASS, WARN or FAIL with the remedy",
		long: `Run every check of docs/diag.md on this host: GPUs and NVML, GPUDirect
(nvidia_peermem or DMA-BUF), PCIe links, ACS and the IOMMU, GPU-NIC affinity,
NIC ports, speed and firmware, rail addresses, MTU, GIDs and the GID NCCL
would use, QoS against the profile, sysctls, source rules and routes, error
counters (sampled twice, --sample apart), the cabling seen through LLDP, the
controller and the daemon. Each result is PASS, WARN, FAIL, UNKNOWN (it could
not tell, and says why) or SKIP (it did not apply, or needed root), with what
was observed, what was expected and the remedy; the table groups them by rail.

It changes nothing, needs no daemon, and runs as any user: checks that need
root (PCI config space, debugfs, raw sockets) are skipped and listed. The
desired state is the config's (in controller mode the last good controller
config in state_dir); without one, or with a config that cannot be read, the
host's own facts are still checked. With --bundle it also writes a tar.gz of
the host's state for a support case (secrets redacted, no private keys).`,
		example: `  # every check, as a table grouped by rail
  roce-agent diag

  # only the QoS and RoCE checks, as JSON
  roce-agent diag --check QOS-,ROCE- -o json

  # a bundle for a support case
  roce-agent diag --bundle /tmp/diag-$(hostname).tar.gz`,
		changes: "nothing (with --bundle it writes that file).",
		exit:    "0 every check PASS or SKIP (the worst result decides); 1 a WARN or UNKNOWN (or an error, such as a missing sysfs root or a bundle that could not be written); 2 a FAIL, or a usage error (an unknown flag or check ID).",
		run:     runDiag,
	},
	{
		use:   "version",
		short: "Print the version, commit, Go version and build date",
		long: `Print the version, the commit, the Go version, the platform and the build date
(roce-agent --version prints the same text). Like every command it reads the
config file when it exists, so a bad one is an error.`,
		example: `  roce-agent version
  roce-agent version -o json
  roce-agent --version`,
		changes: "nothing.",
		exit:    "0 printed; " + exitUsageLine + ".",
		run:     runVersion,
	},
}

func init() {
	// help lists the commands in the order of commandSpecs.
	cobra.EnableCommandSorting = false
}

// newRootCommand builds the command tree; stdout and stderr are where it
// writes.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "roce-agent",
		Short: "The RoCE node agent",
		Long: `roce-agent maps GPUs to RDMA NICs and rails, converges each rail's addresses,
source routing, link settings and QoS, and probes its tenant's peers.

Settings come from, weakest first: defaults, the YAML config file (--config,
else $ROCE_AGENT_CONFIG, else ` + DefaultConfigPath + `), ROCE_AGENT_* environment
variables (every scalar key, dots as underscores: ROCE_AGENT_LOG_LEVEL), flags.
The keys are in docs/config.md; the commands in docs/cli.md.

` + exitCodesHelp,
		Example: `  roce-agent inventory
  roce-agent --config /etc/roce-agent/config.yaml plan -o json
  roce-agent --config /etc/roce-agent/config.yaml apply
  roce-agent help teardown`,
		Version:       versionInfo()["version"],
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				fmt.Fprint(stderr, cmd.UsageString())
				return &usageError{msg: "no command given"}
			}
			return unknownCommand(cmd, args[0])
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate(strings.ReplaceAll(versionText(), "{{", `{{"{{"}}`))
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{msg: err.Error(), cmd: cmd.CommandPath()}
	})
	root.SuggestionsMinimumDistance = 2
	// The root (and completion) run only to report a missing or unknown
	// command: their usage line is "roce-agent [command]".
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.Flags().SortFlags = false

	pf := root.PersistentFlags()
	pf.String("config", "", "YAML config file (keys in docs/config.md; default $ROCE_AGENT_CONFIG, else "+DefaultConfigPath+")")
	pf.String("sysfs-root", nic.DefaultRoot, "sysfs tree to read (a host mount or a fixture tree)")
	pf.StringP("output", "o", "table", "output format: table or json")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	pf.String("log-format", "auto", "log format: auto (json under systemd or Kubernetes), text or json")
	pf.String("listen", "", "run: address for /metrics, /healthz, /readyz, /v1/status (default listen.metrics, "+agent.DefaultConfig().Listen.Metrics+")")
	pf.String("web-config-file", "", "run: Prometheus web configuration file for that endpoint: TLS, client certificates, basic auth (default listen.web_config_file)")
	pf.SortFlags = false
	for flag, values := range map[string][]string{"output": {"table", "json"}, "log-level": {"debug", "info", "warn", "error"}, "log-format": {"auto", "text", "json"}} {
		_ = root.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
	}
	_ = root.MarkPersistentFlagDirname("sysfs-root")
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")

	for _, spec := range commandSpecs {
		cmd := &cobra.Command{
			Use:               spec.use,
			Short:             spec.short,
			Long:              spec.long + "\n\n" + wrap("Changes: "+spec.changes, 80) + "\n\n" + wrap("Exit status: "+spec.exit, 80),
			Annotations:       map[string]string{"changes": spec.changes, "exit": spec.exit},
			Example:           spec.example,
			Args:              noArgs,
			ValidArgsFunction: cobra.NoFileCompletions,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return runCommand(cmd, spec, stdout, stderr)
			},
		}
		cmd.Flags().SortFlags = false
		if spec.use == "teardown" {
			cmd.Flags().Bool("dry-run", false, "print what would be removed, remove nothing")
		}
		if spec.use == "diag" {
			f := cmd.Flags()
			f.StringSlice("check", nil, "run only these checks: IDs or prefixes (QOS-, ROCE-MTU*), comma-separated")
			f.String("bundle", "", "also write a support bundle (tar.gz) to this file")
			f.Duration("bundle-timeout", 60*time.Second, "bound on collecting the bundle")
			f.Duration("sample", 3*time.Second, "time between the two samples of the error counters")
			f.Duration("lldp-listen", diag.DefaultLLDPListen, "as root, how long to listen for LLDP frames on the rails when neither lldpd nor the daemon knows the neighbours (0: do not listen)")
			f.Duration("timeout", 2*time.Minute, "bound on the whole run; checks not done by then are UNKNOWN")
			_ = cmd.MarkFlagFilename("bundle", "tar.gz", "tgz")
		}
		if spec.use == "probe" {
			f := cmd.Flags()
			f.String("peer", "", "the peer node (one the controller lists for the rail)")
			f.Int("rail", -1, "the rail to probe from (the peer's same rail)")
			f.String("tool", "ib_write_bw", "ib_write_bw, ib_write_lat or rping")
			f.String("family", "ipv4", "the GID family: ipv4 or ipv6")
			f.Duration("wait", 30*time.Second, "how long to retry while a NIC (here or at the peer) is busy with another probe")
			_ = cmd.RegisterFlagCompletionFunc("tool", cobra.FixedCompletions(probe.Tools, cobra.ShellCompDirectiveNoFileComp))
			_ = cmd.RegisterFlagCompletionFunc("family", cobra.FixedCompletions([]string{"ipv4", "ipv6"}, cobra.ShellCompDirectiveNoFileComp))
		}
		root.AddCommand(cmd)
	}

	// cobra's completion command, with a missing or unknown shell a usage
	// error instead of its help and exit 0.
	root.InitDefaultCompletionCmd()
	if completion, _, err := root.Find([]string{"completion"}); err == nil && completion != root {
		var shells []string
		for _, c := range completion.Commands() {
			shells = append(shells, c.Name())
			c.Args = noArgs // "completion bash extra" is a usage error
		}
		completion.Args = cobra.ArbitraryArgs
		completion.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				fmt.Fprint(stderr, cmd.UsageString())
				return &usageError{msg: fmt.Sprintf("completion: no shell given (%s)", strings.Join(shells, ", ")), cmd: cmd.CommandPath()}
			}
			return &usageError{msg: fmt.Sprintf("completion: unknown shell %q (%s)", args[0], strings.Join(shells, ", ")), cmd: cmd.CommandPath()}
		}
	}
	return root
}

// wrap breaks a one-line paragraph into lines of at most width bytes.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// noArgs refuses any argument: every command takes flags only.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{msg: fmt.Sprintf("%s: unexpected argument %q", cmd.Name(), args[0]), cmd: cmd.CommandPath()}
	}
	return nil
}

// unknownCommand is cobra's message for a command it does not know, with
// its suggestions ("Did you mean this?").
func unknownCommand(root *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, root.CommandPath())
	if suggestions := root.SuggestionsFor(name); len(suggestions) > 0 {
		msg += "\n\nDid you mean this?"
		for _, s := range suggestions {
			msg += "\n\t" + s
		}
		msg += "\n"
	}
	return &usageError{msg: msg}
}

// runCommand loads the config for one subcommand and runs it.
func runCommand(cmd *cobra.Command, spec commandSpec, stdout, stderr io.Writer) error {
	// cmd.Flags() holds the command's own flags and, once cobra has parsed
	// them, the root's persistent ones: loadConfig looks up both.
	fs := cmd.Flags()
	output, _ := fs.GetString("output")
	if output != "table" && output != "json" {
		return &usageError{msg: fmt.Sprintf("--output: %q is not one of table, json", output), cmd: cmd.CommandPath()}
	}
	cfg, err := loadConfig(fs, spec.desired)
	var configErr error
	if err != nil {
		if spec.use != "diag" {
			return err
		}
		// diag goes on without a usable config: the host's own facts are
		// still worth checking, and the report says why nothing was
		// compared with a desired state.
		configErr, cfg = err, agent.DefaultConfig()
		if root, _ := fs.GetString("sysfs-root"); root != "" {
			cfg.SysfsRoot = root
		}
		if listen, _ := fs.GetString("listen"); listen != "" {
			cfg.Listen.Metrics = listen
		}
	}
	logger, err := newLogger(stderr, cfg.Log)
	if err != nil {
		return err
	}
	if cfg.Controller.URL != "" && (spec.use == "plan" || spec.use == "apply" || spec.use == "teardown" || spec.use == "probe") {
		if cfg, err = lastGoodConfig(cfg, spec, logger); err != nil {
			return err
		}
	}
	env := &cliEnv{flags: fs, cfg: cfg, configErr: configErr, output: output, stdout: stdout, log: logger, nvml: func() nvml.Interface { return nvml.New() }}
	return spec.run(env)
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
	if env.output == "json" {
		return agent.WriteJSON(env.stdout, versionInfo())
	}
	_, err := io.WriteString(env.stdout, versionText())
	return err
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
	if dryRun, _ := env.flags.GetBool("dry-run"); dryRun {
		// A dry run changes nothing: like plan, it takes no lock.
		node, err := openNode(env)
		if err != nil {
			return err
		}
		defer node.Close()
		return teardownNode(env, node)
	}
	return withLockedNode(env, "teardown", func(node *agent.Node) error { return teardownNode(env, node) })
}

func teardownNode(env *cliEnv, node *agent.Node) error {
	dryRun, _ := env.flags.GetBool("dry-run")
	res, err := node.Teardown(dryRun)
	if err != nil {
		return err
	}
	for _, m := range res.Removed {
		env.log.Info("changed", "rail", m.Rail, "netdev", m.Netdev, "kind", string(m.Kind), "object", m.Object, "drift", false)
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

// lastGoodConfig is the desired state of plan, apply and teardown in
// controller mode: the last good config the daemon saved in state_dir
// (they never ask the controller). plan and apply refuse to run without
// one (exit 2, nothing changed); teardown goes on with the settings' own
// routing ranges, and says so.
func lastGoodConfig(cfg agent.Config, spec commandSpec, log *slog.Logger) (agent.Config, error) {
	merged, lg, err := agent.LastGoodConfig(cfg)
	switch {
	case err == nil:
		log.Info("desired state from the last good controller config", "path", filepath.Join(cfg.StateDir, agent.ControllerFile), "generation", lg.Config.Generation, "saved", lg.Saved)
		return merged, nil
	case spec.desired && errors.Is(err, fs.ErrNotExist):
		return cfg, &configError{fmt.Errorf("no desired state: controller.url is set and there is no last good controller config (%s); %s uses the config the daemon last accepted from the controller and does not ask the controller itself: run roce-agent run once (nothing was changed)",
			filepath.Join(cfg.StateDir, agent.ControllerFile), spec.use)}
	case spec.desired:
		return cfg, &configError{fmt.Errorf("no desired state: controller.url is set and the last good controller config cannot be used: %w (nothing was changed)", err)}
	}
	log.Warn("no last good controller config; teardown uses the routing table and rule ranges of the settings (the defaults)", "err", err)
	return cfg, nil
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	version := versionInfo()["version"]
	opts := agent.DaemonOptions{
		Version: version, Log: env.log, NVML: env.nvml, Lock: lock,
		Netns: netns.None(), Debounce: cfg.Reconcile.Debounce, Resync: cfg.Reconcile.ResyncInterval,
	}
	file := fileSource{env.flags}
	opts.Source, opts.Config = file, cfg
	reload := file.Load
	if cfg.Controller.URL != "" {
		// Controller mode: the desired state is the controller's, else
		// the last good one it sent; with neither the daemon waits,
		// changing nothing, until the controller answers.
		ctrl, err := agent.NewControllerSource(agent.ControllerOptions{
			Config: cfg, Reread: func() (agent.Config, error) { return loadConfig(env.flags, true) }, Version: version, Log: env.log,
		})
		if err != nil {
			return &configError{err}
		}
		ctrl.Start(ctx)
		ctrl.WaitFirst(ctx)
		// The daemon starts with the config Load gives now; only later
		// ones need to reach it through Changed.
		select {
		case <-ctrl.Changed():
		default:
		}
		if merged, err := ctrl.Load(); err == nil {
			opts.Config = merged
		}
		opts.Source, opts.Reporter, reload = ctrl, ctrl, ctrl.Reload
	}
	d, err := agent.NewDaemon(opts)
	if err != nil {
		return err
	}
	defer d.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			_ = d.Reload(reload)
		}
	}()
	return d.Run(ctx, cfg.Listen.Metrics)
}
