package agent

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/qos"
)

// Node is the one pipeline from configuration to kernel: the sysfs tree,
// the rails' network namespace, the link and QoS engines, and the last good
// inventory. `plan`, `apply`, `teardown` and the daemon all go through it:
//
//	config -> Refresh (inventory, desired rails) -> Plan | Apply -> Observe (status, conditions)
//
// Every host decision is made here once: whether NVML is asked (useNVML),
// the node's name (nodeName), and that pinned netdevs exist when netlink in
// the rails' namespace says so.
type Node struct {
	host   linkengine.RailHost
	dcb    qos.DCBClient // nil when dcbnl could not be opened (dcbErr)
	dcbErr error
	sock   *qos.Socket
	nvml   func() nvml.Interface
	log    *slog.Logger

	mu        sync.Mutex
	cfg       Config
	fs        *nic.FS
	link      *linkengine.Engine
	inv       *Inventory
	desired   []linkengine.RailLink
	unmanaged []string
	stale     bool // re-read the inventory on the next Refresh
	conds     map[string]conditionSet
}

// NodeOptions say where the node's parts are.
type NodeOptions struct {
	Config Config
	// Netns is the namespace the rails live in; closed means the
	// process's own.
	Netns netns.NsHandle
	// Host is the rails' namespace; nil opens Netns. Tests inject a
	// recording fake (nic/linktest).
	Host linkengine.RailHost
	// DCB is the dcbnl client; nil opens one in the namespace.
	DCB qos.DCBClient
	// NVML is asked for GPUs when useNVML says so.
	NVML func() nvml.Interface
	Log  *slog.Logger
}

// OpenNode opens the rails' namespace (netlink, dcbnl) and the sysfs tree
// of the configuration, which must have passed Validate.
func OpenNode(opts NodeOptions) (*Node, error) {
	n := &Node{nvml: opts.NVML, log: opts.Log, conds: map[string]conditionSet{}}
	if n.log == nil {
		n.log = slog.Default()
	}
	n.host = opts.Host
	if n.host == nil {
		h, err := linkengine.OpenHost(opts.Netns)
		if err != nil {
			return nil, err
		}
		h.SetSysctlRoot(opts.Config.SysctlRoot)
		n.host = h
	}
	if opts.DCB != nil {
		n.dcb = opts.DCB
	} else if n.dcbErr = n.host.Do(func() (err error) { n.sock, err = qos.OpenSocket(); return err }); n.dcbErr == nil {
		n.dcb = qos.NewDCB(n.sock)
	}
	if err := n.SetConfig(opts.Config); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close releases the sockets.
func (n *Node) Close() {
	if n.sock != nil {
		n.sock.Close()
	}
	n.host.Close()
}

// SetConfig swaps in a configuration (already validated): a new sysfs
// tree and link engine; the inventory is read again at the next Refresh.
func (n *Node) SetConfig(cfg Config) error {
	fs, err := nic.NewFS(cfg.SysfsRoot)
	if err != nil {
		return err
	}
	cfg.Node.Name = nodeName(cfg, fs)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cfg, n.fs, n.stale = cfg, fs, true
	n.link = &linkengine.Engine{Host: n.host, StateDir: cfg.StateDir, Range: cfg.LinkRange()}
	return nil
}

// Config is the running configuration.
func (n *Node) Config() Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// FS is the sysfs tree of the running configuration.
func (n *Node) FS() *nic.FS {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fs
}

// DCB is the namespace's dcbnl client, nil when it could not be opened.
func (n *Node) DCB() qos.DCBClient { return n.dcb }

// MarkStale makes the next Refresh read the inventory again.
func (n *Node) MarkStale() {
	n.mu.Lock()
	n.stale = true
	n.mu.Unlock()
}

// useNVML is the one place that decides whether NVML is asked: gpu.nvml
// "on" or "off", else ("auto") only for the live host's /sys (a tree is
// read alone: no NVML, no host files).
func useNVML(cfg Config, fs *nic.FS) bool {
	switch cfg.GPU.NVML {
	case "on":
		return true
	case "off":
		return false
	}
	return fs.IsHost()
}

// nodeName is the node's name: the configured one, else the host name on
// the live host (a tree has none).
func nodeName(cfg Config, fs *nic.FS) string {
	if cfg.Node.Name == "" && fs.IsHost() {
		name, _ := os.Hostname()
		return name
	}
	return cfg.Node.Name
}

// ReadInventory reads the inventory for `roce-agent inventory`: from a
// tree alone (pinned netdevs exist when the tree's /class/net has them),
// or on the live host with NVML and netlink.
func ReadInventory(cfg Config, nvmlLib func() nvml.Interface) (*Inventory, error) {
	fs, err := nic.NewFS(cfg.SysfsRoot)
	if err != nil {
		return nil, err
	}
	var exists func(string) bool
	if fs.IsHost() {
		exists = func(name string) bool { _, err := netlink.LinkByName(name); return err == nil }
	}
	return discover(cfg, fs, nvmlLib, exists)
}

func discover(cfg Config, fs *nic.FS, nvmlLib func() nvml.Interface, netdevExists func(string) bool) (*Inventory, error) {
	opts := InventoryOptions{Node: nodeName(cfg, fs), FS: fs, Pins: cfg.Pins(), NetdevExists: netdevExists}
	if useNVML(cfg, fs) && nvmlLib != nil {
		opts.NVML = nvmlLib()
	}
	return DiscoverInventory(opts)
}

// Refresh reads the inventory and derives the desired rails when the
// last ones are stale (a new config, a resync) or missing. When that fails
// and a previous inventory exists, the node keeps it (a pinned NIC
// vanished, say: every other rail goes on; the vanished one is a
// conflict) and the error is returned.
func (n *Node) Refresh() error {
	n.mu.Lock()
	cfg, fs, stale, have := n.cfg, n.fs, n.stale, n.inv != nil
	n.mu.Unlock()
	if !stale && have {
		return nil
	}
	inv, err := discover(cfg, fs, n.nvml, n.host.LinkExists)
	var desired []linkengine.RailLink
	var unmanaged []string
	if err == nil {
		desired, unmanaged, err = DesiredLinks(cfg, inv)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stale = false
	if err != nil {
		if !have {
			return fmt.Errorf("inventory: %w", err)
		}
		return fmt.Errorf("inventory failed; keeping the previous one until the next resync: %w", err)
	}
	n.inv, n.desired, n.unmanaged = inv, desired, unmanaged
	return nil
}

// qosEngine is the QoS engine over the running sysfs tree and dcbnl.
func (n *Node) qosEngine(fs *nic.FS) *qos.Engine {
	e := &qos.Engine{Files: fs, DCBErr: n.dcbErr}
	if n.dcb != nil {
		e.DCB = n.dcb
	}
	return e
}

// Plan reads the host and returns what Apply would change, changing
// nothing.
func (n *Node) Plan() (*PlanReport, error) {
	if err := n.Refresh(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	cfg, fs, link, inv, desired, unmanaged := n.cfg, n.fs, n.link, n.inv, n.desired, n.unmanaged
	n.mu.Unlock()
	plan, err := link.Plan(desired)
	if err != nil {
		return nil, err
	}
	report := NewPlanReport(desired, plan, unmanaged)
	if profile, _ := cfg.QoSProfile(); !profile.Empty() {
		report.AddQoS(n.qosEngine(fs).Plan(profile, QoSTargets(inv)))
	}
	return report, nil
}

// Applied is what one Apply did: the link engine's result and the QoS
// plan, results and what is left of the plan afterwards.
type Applied struct {
	Inventory *Inventory
	Desired   []linkengine.RailLink
	Unmanaged []string
	Link      linkengine.ApplyResult
	Profile   qos.Profile
	// QoSPlan, QoSResults and QoSAfter are nil without a qos section.
	QoSPlan    *qos.Plan
	QoSResults []qos.Result
	QoSAfter   *qos.Plan
}

// Log logs every change made to the host once, at INFO, with its rail,
// kind and object (the command it equals); repairs say drift=true.
func (a *Applied) Log(log *slog.Logger) {
	for _, m := range a.Link.Made {
		log.Info("changed", "rail", m.Rail, "netdev", m.Netdev, "kind", string(m.Kind), "object", m.Object, "drift", m.Drift)
	}
	for _, r := range a.QoSResults {
		for _, c := range r.Applied {
			log.Info("changed", "rail", r.Rail, "netdev", r.Netdev, "kind", "qos", "object", c, "drift", false)
		}
	}
}

// Report is the result as `roce-agent apply` prints it.
func (a *Applied) Report() *ApplyReport {
	r := NewApplyReport(a.Link, a.Unmanaged)
	if a.QoSPlan != nil {
		r.AddQoS(*a.QoSPlan, a.QoSResults)
	}
	return r
}

// Apply converges the host: links, then QoS. An error means nothing was
// applied (a refused or unreadable state); a rail that did not converge is
// in the result.
func (n *Node) Apply() (*Applied, error) {
	refreshErr := n.Refresh()
	n.mu.Lock()
	cfg, fs, link, inv, desired, unmanaged := n.cfg, n.fs, n.link, n.inv, n.desired, n.unmanaged
	n.mu.Unlock()
	if inv == nil {
		return nil, refreshErr
	}
	if refreshErr != nil {
		n.log.Error("inventory", "err", refreshErr)
	}
	res, err := link.Reconcile(desired)
	if err != nil {
		return nil, err
	}
	a := &Applied{Inventory: inv, Desired: desired, Unmanaged: unmanaged, Link: res}
	a.Profile, _ = cfg.QoSProfile()
	if !a.Profile.Empty() {
		eng := n.qosEngine(fs)
		plan := eng.Plan(a.Profile, QoSTargets(inv))
		a.QoSPlan = &plan
		a.QoSResults = eng.Apply(plan)
		after := remaining(plan, a.QoSResults)
		a.QoSAfter = &after
	}
	return a, nil
}

// Teardown removes (or with dryRun lists) everything the agent owns in the
// rails' namespace.
func (n *Node) Teardown(dryRun bool) (linkengine.TeardownResult, error) {
	n.mu.Lock()
	link := n.link
	n.mu.Unlock()
	return link.Teardown(dryRun)
}

// NetdevState is a netdev's state from netlink in the rails' namespace
// (sysfs shows the namespace sysfs was mounted in), with the speed from
// sysfs where it has the netdev.
func (n *Node) NetdevState(name string) (nic.NetdevState, error) {
	st := nic.NetdevState{SpeedMbs: -1}
	ls, err := n.host.LinkState(name)
	if err != nil {
		return st, err
	}
	st.Up, st.MTU = ls.Up, ls.MTU
	if s, err := n.FS().ReadNetdev(name); err == nil {
		st.SpeedMbs = s.SpeedMbs
	}
	return st, nil
}

// Observe turns an Apply into the node's status: per-rail and node
// conditions (each keeping the time of its last transition), GID indexes
// and tenant bindings.
func (n *Node) Observe(a *Applied, version string) *NodeStatus {
	inv := a.Inventory
	n.mu.Lock()
	cfg, fs := n.cfg, n.fs
	n.mu.Unlock()
	linkRes := map[int]*linkengine.RailResult{}
	for i := range a.Link.Rails {
		linkRes[a.Link.Rails[i].Rail] = &a.Link.Rails[i]
	}
	desiredOf := map[int]*linkengine.RailLink{}
	for i := range a.Desired {
		desiredOf[a.Desired[i].Rail] = &a.Desired[i]
	}
	type netdevRead struct {
		st  nic.NetdevState
		err error
	}
	netdevs := map[string]netdevRead{}
	for _, r := range inv.Rails {
		st, err := n.NetdevState(r.Netdev)
		netdevs[r.Netdev] = netdevRead{st, err}
	}
	now := time.Now()
	st := &NodeStatus{Node: inv.Node, Version: version, Inventory: inv, LastReconcile: now}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range inv.Rails {
		nd, nerr := netdevs[r.Netdev].st, netdevs[r.Netdev].err
		rs, conds := railConditions(inv, r, desiredOf[r.Rail], linkRes[r.Rail], a.Profile, a.QoSAfter, fs, nd, nerr)
		for _, rc := range cfg.Rails {
			if rc.Rail != nil && *rc.Rail == r.Rail {
				rs.Tenant = rc.Tenant
			}
		}
		set := n.conds[fmt.Sprint(r.Rail)]
		if set == nil {
			set = conditionSet{}
			n.conds[fmt.Sprint(r.Rail)] = set
		}
		for _, c := range conds {
			rs.Conditions = append(rs.Conditions, set.set(c.Type, now, c))
		}
		st.Rails = append(st.Rails, rs)
	}
	nodeSet := n.conds["node"]
	if nodeSet == nil {
		nodeSet = conditionSet{}
		n.conds["node"] = nodeSet
	}
	for _, c := range nodeConditions(inv, fs) {
		st.Conditions = append(st.Conditions, nodeSet.set(c.Type, now, c))
	}
	if !a.Link.Converged() {
		st.LastError = a.Link.Err().Error()
	}
	return st
}
