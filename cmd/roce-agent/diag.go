package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/diag"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/probe"
)

// exitStatus ends a command with a status and nothing more to print (the
// command printed its report).
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func runDiag(env *cliEnv) error {
	f := env.flags
	patterns, _ := f.GetStringSlice("check")
	bundlePath, _ := f.GetString("bundle")
	bundleTimeout, _ := f.GetDuration("bundle-timeout")
	sample, _ := f.GetDuration("sample")
	timeout, _ := f.GetDuration("timeout")
	lldpListen, _ := f.GetDuration("lldp-listen")
	usage := func(format string, args ...any) error {
		return &usageError{msg: fmt.Sprintf(format, args...), cmd: "roce-agent diag"}
	}
	switch {
	case sample <= 0 || sample > time.Minute:
		return usage("--sample: %s is not between 0 and 1m", sample)
	case timeout < 5*time.Second || timeout > 30*time.Minute:
		return usage("--timeout: %s is not between 5s and 30m", timeout)
	case lldpListen < 0 || lldpListen > 5*time.Minute:
		return usage("--lldp-listen: %s is not between 0 and 5m", lldpListen)
	case bundleTimeout <= 0 || bundleTimeout > 30*time.Minute:
		return usage("--bundle-timeout: %s is not between 0 and 30m", bundleTimeout)
	}
	checks, err := diag.Select(patterns)
	if err != nil {
		return usage("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	e, closeEnv, err := diagEnv(env, sample)
	if err != nil {
		return err
	}
	e.LLDPListen = lldpListen
	defer closeEnv()
	rep := diag.Run(ctx, e, checks, diag.Options{})
	rep.Version = versionInfo()["version"]
	if env.output == "json" {
		err = rep.WriteJSON(env.stdout)
	} else {
		err = rep.WriteTable(env.stdout)
	}
	if err != nil {
		return err
	}
	if bundlePath != "" {
		bctx, bcancel := context.WithTimeout(context.Background(), bundleTimeout+5*time.Second)
		defer bcancel()
		m, err := diag.WriteBundle(bctx, e, rep, diag.BundleOptions{Path: bundlePath, Timeout: bundleTimeout, Version: rep.Version})
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		fmt.Fprintf(os.Stderr, "bundle: %s (%d entries; manifest.json lists each with its source and status)\n", bundlePath, len(m.Entries))
	}
	if rep.ExitCode != 0 {
		return &exitStatus{rep.ExitCode}
	}
	return nil
}

// diagEnv opens the host for diag: the sysfs tree, the inventory, NVML,
// the node pipeline (netlink, dcbnl) on the live host, and the desired
// state (the config's, or in controller mode the last good controller
// config). Only a missing sysfs root is an error: anything else that
// cannot be opened is recorded for the checks to report.
func diagEnv(env *cliEnv, sample time.Duration) (*diag.Env, func(), error) {
	cfg := env.cfg
	e := &diag.Env{
		Config: cfg, ConfigErr: env.configErr, Runner: probe.ExecRunner{}, Sample: sample, Log: env.log,
		HTTP:       &http.Client{Timeout: 10 * time.Second},
		Privileged: os.Geteuid() == 0,
	}
	if env.configErr != nil {
		e.Note(fmt.Sprintf("the config could not be used (%v): diag ran with the defaults and compared nothing with a desired state", env.configErr))
	}
	if cfg.Controller.URL != "" && env.configErr == nil {
		merged, _, err := agent.LastGoodConfig(cfg)
		switch {
		case err == nil:
			cfg, e.Config = merged, merged
		case errors.Is(err, os.ErrNotExist):
			e.Note("controller mode: no last good controller config in state_dir, so the host is not compared with a desired state")
		default:
			e.Note(fmt.Sprintf("controller mode: the last good controller config cannot be used: %v", err))
		}
	}
	e.Desired = env.configErr == nil && cfg.NoDesiredState() == ""
	fs, err := nic.NewFS(cfg.SysfsRoot)
	if err != nil {
		return nil, nil, err
	}
	e.FS = fs
	e.Live = fs.IsHost()
	var lib func() nvml.Interface
	if e.Live && cfg.GPU.NVML != "off" {
		e.NVML = env.nvml()
		lib = func() nvml.Interface { return e.NVML }
	}
	if !e.Live {
		lib = nil
	}
	e.Inventory, e.InventoryErr = agent.ReadInventory(cfg, lib)
	// The kernel's rails are compared on the live host, and with a tree
	// whose rail netdevs are in this network namespace (a lab host, or a
	// container with the host's sysfs mounted elsewhere); a tree from
	// another machine is read alone.
	kernel := e.Live || treeRailsHere(e.Inventory)
	switch {
	case !e.Live && kernel:
		e.Note("the sysfs tree is " + fs.Root() + " and its rail netdevs are in this network namespace: the kernel's rails are compared")
	case !e.Live:
		e.Note("the sysfs tree is " + fs.Root() + ", not the live host's, and none of its rail netdevs is in this network namespace: checks that need the kernel are skipped")
	}
	closeEnv := func() {}
	if kernel {
		node, err := agent.OpenNode(agent.NodeOptions{Config: cfg, Netns: netns.None(), NVML: lib, Log: env.log})
		if err != nil {
			e.NodeErr = err
		} else {
			e.Node = node
			closeEnv = node.Close
		}
	}
	return e, closeEnv, nil
}

// treeRailsHere says whether a rail netdev of the inventory exists in
// this network namespace.
func treeRailsHere(inv *agent.Inventory) bool {
	if inv == nil {
		return false
	}
	for _, r := range inv.Rails {
		if r.Netdev == "" {
			continue
		}
		if _, err := netlink.LinkByName(r.Netdev); err == nil {
			return true
		}
	}
	return false
}
