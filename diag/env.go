package diag

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/gpu/topology"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/probe"
)

// Env is the host as the checks see it. Every field is a seam: tests
// point FS and ProcRoot at fixture trees, inject an NVML mock, a fake
// runner and a recording node.
type Env struct {
	// Config is the agent's configuration: its desired state (rails,
	// qos) when Desired is set, else its settings only.
	Config agent.Config
	// Desired says the config carries a desired state to compare the
	// host against; without one the checks against it SKIP.
	Desired bool
	// ConfigErr is why the config could not be used (unreadable,
	// invalid): diag goes on with the defaults and says so.
	ConfigErr error

	// FS is the sysfs tree.
	FS *nic.FS
	// ProcRoot is the procfs tree ("/proc"): sysctls, kernel version,
	// command line.
	ProcRoot string
	// Live says FS is the running host's /sys, so netlink, dcbnl and the
	// tools see the same host; with a fixture tree the checks that need
	// the kernel SKIP.
	Live bool

	// Inventory is the node's inventory; InventoryErr why there is none.
	Inventory    *agent.Inventory
	InventoryErr error
	// NVML is the NVML library when it is to be asked (the live host,
	// gpu.nvml not off); nil otherwise.
	NVML nvml.Interface
	// Node is the agent's pipeline (netlink, dcbnl) in the rails'
	// namespace, read-only here; NodeErr why there is none.
	Node    *agent.Node
	NodeErr error

	// Runner runs the tools (ibv_devinfo, lldpctl, ethtool, ip, dmesg).
	Runner probe.Runner
	// HTTP asks the daemon and the controller.
	HTTP *http.Client

	// Privileged says diag runs as root (CAP_SYS_ADMIN): PCI config space
	// past 64 bytes, debugfs and raw sockets are readable.
	Privileged bool
	// Sample is how far apart the two samples of the error counters are.
	Sample time.Duration
	// LLDPListen is how long the cabling checks listen for LLDP frames
	// when neither lldpd nor the daemon knows the rails' neighbours (leaves
	// send one every 30s by default); 0 does not listen.
	LLDPListen time.Duration
	// Clock is the time; nil means time.Now.
	Clock func() time.Time
	// Sleep waits between samples; nil sleeps for real (honouring ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	Log   *slog.Logger

	mu    sync.Mutex
	notes []string
	diag  diagnosis
	// cabling is the rails' LLDP neighbours, read once per run.
	cabling lldpView
}

// NewEnv fills the defaults of an Env built by hand: ProcRoot, Clock,
// Sleep, Log.
func (e *Env) defaults() {
	if e.ProcRoot == "" {
		e.ProcRoot = "/proc"
	}
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
	if e.Sample == 0 {
		e.Sample = 3 * time.Second
	}
}

// Note records a fact about the run for the report ("no desired state").
func (e *Env) Note(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.notes {
		if n == s {
			return
		}
	}
	e.notes = append(e.notes, s)
}

// Notes returns the notes recorded so far.
func (e *Env) Notes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.notes...)
}

func (e *Env) now() time.Time {
	if e.Clock != nil {
		return e.Clock()
	}
	return time.Now()
}

// Wait sleeps d or until ctx ends.
func (e *Env) Wait(ctx context.Context, d time.Duration) error {
	if e.Sleep != nil {
		return e.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Env) logf(msg string, args ...any) {
	if e.Log != nil {
		e.Log.Debug(msg, args...)
	}
}

// NodeName is the node's name: the inventory's, else the config's.
func (e *Env) NodeName() string {
	if e.Inventory != nil && e.Inventory.Node != "" {
		return e.Inventory.Node
	}
	return e.Config.Node.Name
}

func (e *Env) sysfsRoot() string {
	if e.FS != nil {
		return e.FS.Root()
	}
	return e.Config.SysfsRoot
}

// Rails are the inventory's rails (none without an inventory).
func (e *Env) Rails() []topology.Rail {
	if e.Inventory == nil {
		return nil
	}
	return e.Inventory.Rails
}

// RailNIC returns the NIC of a rail from the inventory.
func (e *Env) RailNIC(r topology.Rail) *nic.NIC {
	if e.Inventory == nil {
		return nil
	}
	for i := range e.Inventory.NICs {
		n := &e.Inventory.NICs[i]
		if (r.RDMADevice != "" && n.RDMADevice == r.RDMADevice) || (r.RDMADevice == "" && n.Netdev == r.Netdev) {
			return n
		}
	}
	return nil
}

// ReadProc reads a file below ProcRoot ("sys/net/ipv4/conf/all/rp_filter"),
// trimmed of its trailing newline.
func (e *Env) ReadProc(p string) (string, error) {
	b, err := os.ReadFile(path.Join(e.ProcRoot, p))
	if err != nil {
		return "", err
	}
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s, nil
}

// RunTool runs a tool through the runner with a timeout; ErrToolMissing
// says it is not installed.
func (e *Env) RunTool(ctx context.Context, timeout time.Duration, name string, args ...string) (probe.Output, error) {
	if e.Runner == nil {
		return probe.Output{}, probe.ErrToolMissing
	}
	return probe.Run(ctx, e.Runner, probe.Command{Name: name, Args: args, Timeout: timeout})
}

// diagnosis caches the node's Diagnose: every link and QoS check reads
// the same snapshot of the host.
type diagnosis struct {
	once sync.Once
	d    *agent.Diagnosis
	err  error
}

// Diagnosis is the node's comparison of the host with the desired state,
// made once per run. It fails without a node (a fixture tree, netlink
// unavailable) or without an inventory.
func (e *Env) Diagnosis() (*agent.Diagnosis, error) {
	e.diag.once.Do(func() {
		switch {
		case e.Node == nil && e.NodeErr != nil:
			e.diag.err = e.NodeErr
		case e.Node == nil:
			e.diag.err = errNoKernel
		default:
			e.diag.d, e.diag.err = e.Node.Diagnose()
			if e.diag.err == nil && e.diag.d.Note != "" {
				e.Note(e.diag.d.Note)
			}
		}
	})
	return e.diag.d, e.diag.err
}

var errNoKernel = errors.New("the inventory comes from a sysfs tree (--sysfs-root) whose rail netdevs are not in this network namespace: the kernel's rails are not compared")
