package probe

import (
	"context"
	"strings"
	"sync"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// Perftest is what the installed perftest can do, read once from its
// --help.
type Perftest struct {
	// BindSourceIP: the client binds its out-of-band socket to the rail
	// address with --bind_source_ip (perftest 23.07 and later). In older
	// ones (Debian 12's 4.5-0.17) the RDMA tests' --source_ip is shadowed
	// by the raw-Ethernet option of the same name and binds nothing: the
	// exchange then follows the main routing table.
	BindSourceIP bool
}

// ParsePerftestHelp reads a perftest tool's --help.
func ParsePerftestHelp(help string) Perftest {
	return Perftest{BindSourceIP: strings.Contains(help, "--bind_source_ip")}
}

// perftestProbeTimeout bounds the --help run.
const perftestProbeTimeout = 10 * time.Second

// perftestFeatures caches Perftest per tool name: it is read with the
// first probe of each tool, and again after a failed read.
type perftestFeatures struct {
	mu    sync.Mutex
	known map[string]Perftest
}

// get is the tool's Perftest, read through r when not known yet. A tool
// that cannot be run gives the old behaviour (and is asked again next
// time): the probe's own run then says what is wrong with it.
func (f *perftestFeatures) get(ctx context.Context, r Runner, tool string) Perftest {
	if tool == v1.ProbeToolReachability {
		return Perftest{}
	}
	f.mu.Lock()
	p, ok := f.known[tool]
	f.mu.Unlock()
	if ok {
		return p
	}
	out, err := Run(ctx, r, Command{Name: tool, Args: []string{"--help"}, Timeout: perftestProbeTimeout})
	if err != nil || out.TimedOut {
		return Perftest{}
	}
	// perftest prints its usage and exits 0 or 1 depending on the version
	p = ParsePerftestHelp(out.Stdout + out.Stderr)
	if !strings.Contains(out.Stdout+out.Stderr, "Usage:") {
		return p
	}
	f.mu.Lock()
	if f.known == nil {
		f.known = map[string]Perftest{}
	}
	f.known[tool] = p
	f.mu.Unlock()
	return p
}
