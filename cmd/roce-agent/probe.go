package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/probe"
)

// errProbeFailed makes a failed probe exit 1 once its result is printed.
var errProbeFailed = errors.New("probe failed")

func runProbe(env *cliEnv) error {
	f := env.flags
	peerName, _ := f.GetString("peer")
	rail, _ := f.GetInt("rail")
	tool, _ := f.GetString("tool")
	family, _ := f.GetString("family")
	usage := func(format string, args ...any) error {
		return &usageError{msg: fmt.Sprintf(format, args...), cmd: "roce-agent probe"}
	}
	switch {
	case peerName == "":
		return usage("--peer: required (a peer node the controller lists for the rail)")
	case rail < 0:
		return usage("--rail: required (the rail number, 0 or more)")
	case !probe.ValidTool(tool):
		return usage("--tool: %q is not ib_write_bw, ib_write_lat or rping", tool)
	case !probe.ValidFamily(family):
		return usage("--family: %q is not ipv4 or ipv6", family)
	case env.cfg.Listen.ProbeAPI == "":
		return &configError{errors.New("listen.probe_api: not set: the peers' probe API port is unknown (probes need it on every node)")}
	}
	tlsCfg, err := agent.ProbeTLS(env.cfg)
	if err != nil {
		return &configError{err}
	}
	node, err := openNode(env)
	if err != nil {
		return err
	}
	defer node.Close()
	if err := node.Refresh(); err != nil {
		return err
	}
	var r *probe.Rail
	var served []string
	for _, pr := range node.ProbeRails() {
		served = append(served, fmt.Sprint(pr.Rail))
		if pr.Rail == rail {
			pr := pr
			r = &pr
		}
	}
	if r == nil {
		return &configError{fmt.Errorf("--rail %d: not a probed rail here (rails with an address, an RDMA device and a tenant: %s)", rail, orNone(served))}
	}
	var peer *probe.Peer
	var names []string
	for _, p := range r.Peers {
		names = append(names, p.Node)
		if p.Node == peerName {
			p := p
			peer = &p
		}
	}
	if peer == nil {
		return &configError{fmt.Errorf("--peer %s: not a probe peer of rail %d (tenant %s; peers: %s)", peerName, rail, r.Tenant, orNone(names))}
	}
	client, err := agent.NewProbeClient(node, env.cfg, tlsCfg, &probe.Slots{Dir: env.cfg.StateDir})
	if err != nil {
		return &configError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tests := agent.ProbeTests(env.cfg.Probes, []string{tool}, []string{family})
	// A busy NIC (the daemon's probe here, or any at the peer) is waited
	// for, up to --wait: busy says nothing about the rail.
	wait, _ := f.GetDuration("wait")
	deadline := time.Now().Add(wait)
	res := client.Probe(ctx, *r, *peer, tests[0])
	for attempt := 1; res.Outcome == probe.OutcomeBusy; attempt++ {
		pause := probe.RetryAfter(res.RetryAfter, attempt, nil)
		if time.Now().Add(pause).After(deadline) {
			break
		}
		env.log.Info("busy; retrying", "reason", res.Error, "in", pause.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		res = client.Probe(ctx, *r, *peer, tests[0])
	}
	if env.output == "json" {
		if err := agent.WriteJSON(env.stdout, res.ProbeResult); err != nil {
			return err
		}
	} else if err := writeProbeTable(env, res); err != nil {
		return err
	}
	if res.Outcome != probe.OutcomePass {
		return fmt.Errorf("%w (%s): %s", errProbeFailed, res.Outcome, res.Error)
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func writeProbeTable(env *cliEnv, res probe.Result) error {
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "RAIL\tPEER\tTOOL\tFAMILY\tOUTCOME\tRESULT\n")
	r := res.ProbeResult
	figure := agent.DescribeProbe(r)
	fmt.Fprintf(w, "%d\t%s/%d\t%s\t%s\t%s\t%s\n", r.Rail, r.PeerNode, r.PeerRail, r.Tool, r.Family, res.Outcome, figure)
	return w.Flush()
}
