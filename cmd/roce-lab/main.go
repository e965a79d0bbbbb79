// Command roce-lab runs a multi-tenant RoCE fabric lab in network
// namespaces (docs/lab.md): hosts with DGX-like rails, leaves with one
// namespace per tenant joined by VXLAN over a spine, the reference
// controller and one agent per host. It waits until every agent has
// converged, prints where to look, and removes everything on Ctrl-C or
// SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	hosts, leaves    int
	prefix, workDir  string
	binDir, planFile string
	mgmt             string
	keep, expose     bool
	cleanup          bool
	timeout          time.Duration
	logLevel         string
	controllerPort   int
	followInterval   time.Duration
	probeInterval    time.Duration
	lldp             string
	swapRails        []string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := pflag.NewFlagSet("roce-lab", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.hosts, "hosts", lab.DefaultHosts, "hosts of the default plan (gpu-00, gpu-01, ...)")
	fs.IntVar(&o.leaves, "leaves", lab.DefaultLeaves, "leaves (at most one per host); host i attaches to leaf i*leaves/hosts")
	fs.StringVar(&o.prefix, "prefix", lab.DefaultPrefix, "prefix of every namespace name, so that labs coexist")
	fs.StringVar(&o.workDir, "workdir", "", "work dir: sysfs trees, configs, certificates, state, logs (must be absent or empty; default $TMPDIR/roce-lab-<prefix>)")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory of roce-agent and roce-controller (default: this executable's)")
	fs.StringVar(&o.planFile, "plan", "", "fabric plan file, YAML or JSON (default: the built-in plan for --hosts)")
	fs.StringVar(&o.mgmt, "mgmt-subnet", lab.DefaultMgmtSubnet.String(), "management subnet: controller .1, host i .10+i")
	fs.BoolVar(&o.expose, "expose", false, "add a veth <prefix>mg to this namespace on the management network (the only thing made outside the lab's namespaces)")
	fs.BoolVar(&o.keep, "keep", false, "on exit, leave the namespaces, processes and work dir (remove them later with --cleanup)")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove what a lab with --prefix left (processes, namespaces, the --expose link, the work dir) and exit")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for every agent to converge")
	fs.StringVar(&o.logLevel, "log-level", "info", "the agents' log level: debug, info, warn, error")
	fs.IntVar(&o.controllerPort, "controller-port", lab.DefaultControllerPort, "the controller's HTTPS port")
	fs.DurationVar(&o.followInterval, "follow-interval", time.Second, "how often the leaves re-read the controller's tenants")
	fs.DurationVar(&o.probeInterval, "probe-interval", lab.DefaultProbeInterval, "the agents' probes.interval: how often each rail probes its tenant peers with the lab's fake tools (5s-24h; 0: no scheduled probes, the probe API still serves)")
	fs.StringVar(&o.lldp, "lldp", lab.LLDPAuto, "lldpd in the host and leaf namespaces, for the agents' cabling check: auto (when lldpd is installed), on, off")
	fs.StringArrayVar(&o.swapRails, "swap-rails", nil, "miscable: swap the leaf ports two rails of a node reach, NODE:A,B (repeatable; the agents' CablingOK catches it through LLDP)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: roce-lab [flags]\n\nBrings up a multi-tenant RoCE fabric lab in network namespaces (root), starts the\ncontroller and one agent per host, prints where to look and waits for Ctrl-C.\nSee docs/lab.md.\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "roce-lab: %v (roce-lab --help lists the flags)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "roce-lab: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "roce-lab: needs root (network namespaces)")
		return 1
	}
	if o.cleanup {
		err := lab.Cleanup(o.prefix)
		if o.workDir != "" {
			err = errors.Join(err, lab.RemoveWorkDir(o.workDir))
		}
		if err != nil {
			fmt.Fprintf(stderr, "roce-lab: cleanup: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "removed what a lab with prefix %q left\n", o.prefix)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !fs.Changed("leaves") {
		o.leaves = 0 // the lab's default: 2, or 1 for a single host
	}
	if err := up(ctx, o, logger, stdout); err != nil {
		fmt.Fprintf(stderr, "roce-lab: %v\n", err)
		return 1
	}
	return 0
}

func up(ctx context.Context, o options, logger *slog.Logger, stdout io.Writer) (err error) {
	lo := lab.Options{Prefix: o.prefix, Hosts: o.hosts, Leaves: o.leaves, WorkDir: o.workDir, Expose: o.expose, LLDP: o.lldp}
	swaps, err := parseSwaps(o.swapRails)
	if err != nil {
		return err
	}
	if lo.MgmtSubnet, err = netip.ParsePrefix(o.mgmt); err != nil {
		return fmt.Errorf("--mgmt-subnet: %w", err)
	}
	if o.planFile != "" {
		p, err := lab.ReadPlan(o.planFile)
		if err != nil {
			return err
		}
		lo.Plan = &p
	}
	if o.binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		o.binDir = filepath.Dir(exe)
	}
	if err := lab.CheckBinaries(o.binDir); err != nil {
		return err
	}
	t0 := time.Now()
	f, err := lab.Up(lo)
	if err != nil {
		return err
	}
	logger.Info("topology up", "namespaces", len(f.Namespaces()), "took", time.Since(t0).Round(time.Millisecond), "work_dir", f.WorkDir())
	if note := f.LLDPNote(); note != "" {
		logger.Warn(note + ": the agents' cabling check (CablingOK) is off")
	}
	var procs *lab.Processes
	defer func() {
		if o.keep {
			logger.Info("kept: remove with roce-lab --cleanup", "prefix", f.Prefix(), "work_dir", f.WorkDir())
			return
		}
		var errs []error
		if procs != nil {
			errs = append(errs, procs.Stop())
		}
		errs = append(errs, f.Down())
		if derr := errors.Join(errs...); derr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", derr))
			return
		}
		logger.Info("removed everything the lab made")
	}()
	for _, sw := range swaps {
		h, ok := f.HostOf(sw.node)
		if !ok {
			return fmt.Errorf("--swap-rails: no node %s", sw.node)
		}
		if err := f.SwapRails(h, sw.a, sw.b); err != nil {
			return fmt.Errorf("--swap-rails: %w", err)
		}
		logger.Info("miscabled: rails swapped at the leaf", "node", sw.node, "rails", fmt.Sprintf("%d,%d", sw.a, sw.b))
	}
	probeInterval := o.probeInterval
	if probeInterval == 0 {
		probeInterval = -1 // no scheduled probes
	}
	procs, err = f.Start(ctx, lab.ProcessOptions{
		BinDir: o.binDir, ControllerPort: o.controllerPort, LogLevel: o.logLevel, Detach: o.keep, Logger: logger,
		ProbeInterval: probeInterval,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted: clean up quietly
		}
		return err
	}
	logger.Info("controller and agents started", "controller", procs.ControllerURL(), "agents", f.Hosts())
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	werr := procs.WaitConverged(wctx)
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	if werr != nil {
		logger.Error("not every agent converged; the lab stays up for a look", "err", werr)
	} else {
		logger.Info("every agent converged", "took", time.Since(t0).Round(time.Millisecond))
	}
	if werr == nil && f.LLDPNote() == "" {
		// CablingOK counts in tenant health: wait for the agents' first
		// verdict (they read LLDP every lldp.interval), so that a
		// --swap-rails lab does not first print healthy
		logger.Info("waiting for the agents' first cabling check (LLDP)")
		cctx, cancel := context.WithTimeout(ctx, cablingWait)
		if err := procs.WaitCablingChecked(cctx); err != nil && ctx.Err() == nil {
			logger.Warn("not every rail has a cabling verdict yet: tenant health may still change", "err", err)
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
	printHealth(ctx, procs, f, stdout)
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, procs.Guide())
	go procs.Follow(ctx, o.followInterval)
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping")
			return werr
		case e := <-procs.Exited():
			logger.Error("process exited; the lab stays up until Ctrl-C", "process", e.Name, "err", e.Err, "log", e.Log)
		}
	}
}

// cablingWait bounds the wait for the agents' first cabling verdicts: a
// little over one lldp.interval (30 s).
const cablingWait = 45 * time.Second

// printHealth prints each tenant's health as the controller reports it.
func printHealth(ctx context.Context, procs *lab.Processes, f *lab.Fabric, w io.Writer) {
	for _, t := range f.Plan().Tenants {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		th, err := procs.TenantHealth(hctx, t.ID)
		cancel()
		if err != nil {
			fmt.Fprintf(w, "tenant %s: health unavailable: %v\n", t.ID, err)
			continue
		}
		fmt.Fprintf(w, "tenant %s (VNI %d): %d of %d rails healthy%s\n", t.ID, t.VNI, th.Healthy, th.Total, members(t))
	}
}

func members(t v1.Tenant) string {
	s := ""
	for _, m := range t.Members {
		if len(m.GPUs) == 0 {
			s += " " + m.Node
		} else {
			s += fmt.Sprintf(" %s%v", m.Node, m.GPUs)
		}
	}
	return ";" + s
}

// swap is a --swap-rails value.
type swap struct {
	node string
	a, b int
}

// parseSwaps parses NODE:A,B values.
func parseSwaps(values []string) ([]swap, error) {
	var out []swap
	for _, v := range values {
		node, rails, ok := strings.Cut(v, ":")
		var sw swap
		if ok {
			_, err := fmt.Sscanf(rails, "%d,%d", &sw.a, &sw.b)
			ok = err == nil && fmt.Sprintf("%d,%d", sw.a, sw.b) == rails
		}
		if !ok || node == "" {
			return nil, fmt.Errorf("--swap-rails %q: want NODE:A,B (two rails of a node, e.g. gpu-01:0,1)", v)
		}
		sw.node = node
		out = append(out, sw)
	}
	return out, nil
}
