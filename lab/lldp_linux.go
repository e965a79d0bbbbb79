package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// LLDP modes of Options.LLDP.
const (
	// LLDPAuto runs lldpd when it is installed (FindLLDPD), and goes
	// without, saying so (LLDPNote), when it is not.
	LLDPAuto = "auto"
	// LLDPOn runs lldpd: Up fails without it.
	LLDPOn = "on"
	// LLDPOff runs no lldpd.
	LLDPOff = "off"
)

// LLDPTxInterval is how often every lldpd of the lab sends its LLDPDU
// (lldpcli configure lldp tx-interval): a neighbour's TTL is 4 times
// that, so a change of cabling shows within a few seconds.
const LLDPTxInterval = time.Second

// lldpDir is the work dir entry of the lldpds' logs, configs and control
// sockets: lldpd/<namespace>.{log,conf,sock}. lldpd runs lldpcli, and
// lldpcli (even root's) talks to lldpd, as lldpd's user (_lldpd): where
// that user cannot reach the work dir (a directory on the way is not
// searchable by others, as t.TempDir's), configs and sockets go to
// LLDPRunDir(prefix) instead.
const lldpDir = "lldpd"

// LLDPRunDir is where the lldpds of a lab with this prefix keep their
// configs and control sockets when lldpd's user cannot reach the work
// dir: /run/roce-lab-<prefix without trailing '-' or '_'>-lldpd. Down
// and Cleanup remove it.
func LLDPRunDir(prefix string) string {
	base := "/run"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = os.TempDir()
	}
	return filepath.Join(base, "roce-lab-"+strings.TrimRight(prefix, "-_")+"-lldpd")
}

// searchableByOthers reports whether every existing directory from dir
// up to / lets others through (o+x): the nearest existing one stands for
// those the lab is yet to make (0755).
func searchableByOthers(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" || d == "." {
			return true
		}
	}
}

// maxSocketPath bounds a control socket's path (sun_path is 108 bytes
// with its NUL; lldpd adds ".lock" to name its lock file beside it).
const maxSocketPath = 100

// FindLLDPD finds lldpd and lldpcli in PATH, or in /usr/sbin and
// /usr/local/sbin (a PATH without the sbin directories).
func FindLLDPD() (lldpd, lldpcli string, err error) {
	find := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s is not installed (apt-get install lldpd)", name)
	}
	if lldpd, err = find("lldpd"); err != nil {
		return "", "", err
	}
	if lldpcli, err = find("lldpcli"); err != nil {
		return "", "", err
	}
	return lldpd, lldpcli, nil
}

// lldpSet is the lab's lldpds: one per host namespace (system name: the
// node name, rails only) and one per leaf namespace that holds leaf
// ports, the tenants' and the parking one (system name: LeafName, leaf
// ports only, port ID = the port's name).
type lldpSet struct {
	bin, cli string
	// dir holds the configs and control sockets: the work dir's lldpd/,
	// or LLDPRunDir.
	dir string
	// ownRun: the lab made dir outside the work dir (LLDPRunDir).
	ownRun bool
	// note says why the lab runs no lldpd ("" when it does).
	note string
	// active: Up started them; namespaces made later get theirs.
	active bool
	procs  map[string]*lldpProc // by namespace name
}

type lldpProc struct {
	ns, sock, log string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

// setupLLDP decides, from Options.LLDP, whether the lab runs lldpd.
func (f *Fabric) setupLLDP(mode string) error {
	f.lldp = &lldpSet{procs: map[string]*lldpProc{}}
	switch mode {
	case "", LLDPAuto, LLDPOn:
	case LLDPOff:
		f.lldp.note = "LLDP is off (Options.LLDP)"
		return nil
	default:
		return fmt.Errorf("lldp: %q, want %s, %s or %s", mode, LLDPAuto, LLDPOn, LLDPOff)
	}
	bin, cli, err := FindLLDPD()
	f.lldp.dir = f.path(lldpDir)
	if !searchableByOthers(f.workDir) {
		f.lldp.dir = LLDPRunDir(f.prefix)
	}
	if err == nil {
		if long := filepath.Join(f.lldp.dir, strings.Repeat("x", 20)+".sock"); len(long) > maxSocketPath {
			err = fmt.Errorf("directory %s is too long for lldpd's control sockets (%d bytes at most for %s)", f.lldp.dir, maxSocketPath, long)
		}
	}
	if err != nil {
		if mode == LLDPOn {
			return fmt.Errorf("lldp: %w", err)
		}
		f.lldp.note = "no LLDP in the lab: " + err.Error()
		return nil
	}
	f.lldp.bin, f.lldp.cli = bin, cli
	return nil
}

// LLDP reports whether the lab runs lldpd in its host and leaf
// namespaces.
func (f *Fabric) LLDP() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lldp != nil && f.lldp.active
}

// LLDPNote says why the lab runs no lldpd ("" when it does).
func (f *Fabric) LLDPNote() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lldp == nil {
		return "the lab is not up"
	}
	return f.lldp.note
}

// LeafName is leaf l's LLDP system name, the leaf of the plan's cabling.
func (f *Fabric) LeafName(l int) string { return leafSysName(l) }

func leafSysName(l int) string { return fmt.Sprintf("leaf%d", l) }

// LLDPSocket is host i's lldpd control socket (lldpctl -u), "" when the
// lab runs no lldpd.
func (f *Fabric) LLDPSocket(host int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lldp == nil || !f.lldp.active {
		return ""
	}
	return f.lldpSock(f.hosts[host].ns.name)
}

func (f *Fabric) lldpSock(ns string) string { return filepath.Join(f.lldp.dir, ns+".sock") }

// labCabling is the plan's cabling of host i as the lab builds it: rail
// n to leaf port h<i>r<n> of the host's leaf.
func labCabling(host, leafIndex, rails int) []v1.RailCabling {
	out := make([]v1.RailCabling, rails)
	for r := range out {
		out[r] = v1.RailCabling{Rail: r, Leaf: leafSysName(leafIndex), Port: leafPortName(host, r)}
	}
	return out
}

// startLLDP starts an lldpd in every host namespace and in every leaf
// namespace with ports (the parking ones, the tenants'), and waits for
// their control sockets.
func (f *Fabric) startLLDP() error {
	if f.lldp == nil || f.lldp.bin == "" {
		return nil
	}
	if _, err := f.mkdir(lldpDir); err != nil {
		return err
	}
	if f.lldp.dir != f.path(lldpDir) {
		if err := os.MkdirAll(f.lldp.dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", f.lldp.dir, err)
		}
		f.lldp.ownRun = true
		if err := os.WriteFile(filepath.Join(f.lldp.dir, markerFile), []byte(f.prefix+"\n"), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(f.lldp.dir, markerFile), err)
		}
	}
	// lldpd's user reads the configs and reaches the sockets.
	if err := os.Chmod(f.lldp.dir, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", f.lldp.dir, err)
	}
	f.lldp.active = true
	var all []*namespace
	for _, h := range f.hosts {
		all = append(all, h.ns)
	}
	for _, lf := range f.leaves {
		all = append(all, lf.park)
		for _, id := range sortedKeys(lf.tenants) {
			all = append(all, lf.tenants[id].ns)
		}
	}
	// All at once, then wait for each.
	var started []*lldpProc
	for _, ns := range all {
		pr, err := f.launchLLDP(ns)
		if err != nil {
			return err
		}
		if pr != nil {
			started = append(started, pr)
		}
	}
	var errs []error
	for _, pr := range started {
		errs = append(errs, pr.wait())
	}
	return errors.Join(errs...)
}

// lldpRole is what an lldpd in a namespace speaks for: its system name,
// the interfaces it runs on (lldpd -I) and its chassis ID ("" : lldpd's
// own, a MAC of the namespace).
func (f *Fabric) lldpRole(ns *namespace) (name, ifaces, chassis string, ok bool) {
	for _, h := range f.hosts {
		if h.ns == ns {
			return h.node.Name, strings.Join(h.netdevs, ","), "", true
		}
	}
	for l, lf := range f.leaves {
		mine := lf.park == ns
		for _, tn := range lf.tenants {
			mine = mine || tn.ns == ns
		}
		if mine {
			// One chassis for every namespace of the leaf, as one switch.
			return leafSysName(l), "h*r*", net.HardwareAddr{0x02, 0xec, byte(l >> 8), byte(l), 0, 0}.String(), true
		}
	}
	return "", "", "", false
}

// startLLDPIn starts the lldpd of a namespace (when the lab runs them).
// Equivalent to:
//
//	ip netns exec <ns> lldpd -d -k -u <work>/lldpd/<ns>.sock -I <ifaces> -S <descr> -O <work>/lldpd/<ns>.conf
//
// where the config file holds
//
//	configure system hostname <name>
//	configure system chassisid <chassis>     (leaves)
//	configure lldp portidsubtype ifname
//	configure lldp tx-interval 1
func (f *Fabric) startLLDPIn(ns *namespace) error {
	pr, err := f.launchLLDP(ns)
	if err != nil || pr == nil {
		return err
	}
	return pr.wait()
}

// launchLLDP starts the lldpd of a namespace (nil: the lab runs none, or
// it runs already).
func (f *Fabric) launchLLDP(ns *namespace) (*lldpProc, error) {
	if f.lldp == nil || !f.lldp.active {
		return nil, nil
	}
	if pr := f.lldp.procs[ns.name]; pr != nil {
		select {
		case <-pr.done:
		default:
			return nil, nil // running
		}
	}
	name, ifaces, chassis, ok := f.lldpRole(ns)
	if !ok {
		return nil, nil
	}
	descr := "roce-lab host " + name
	conf := []string{"configure system hostname " + name}
	if chassis != "" {
		descr = "roce-lab " + name
		conf = append(conf, "configure system chassisid "+chassis)
	}
	conf = append(conf,
		"configure lldp portidsubtype ifname",
		fmt.Sprintf("configure lldp tx-interval %d", int(LLDPTxInterval/time.Second)),
	)
	confFile := filepath.Join(f.lldp.dir, ns.name+".conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", confFile, err)
	}
	sock := f.lldpSock(ns.name)
	// A socket (or lock) left by an lldpd killed hard.
	_ = os.Remove(sock)
	_ = os.Remove(sock + ".lock")
	logFile := f.path(lldpDir, ns.name+".log")
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lldpd log of netns %s: %w", ns.name, err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns.name, f.lldp.bin, "-d", "-k",
		"-u", sock, "-I", ifaces, "-S", descr, "-L", f.lldp.cli, "-O", confFile)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a terminal's Ctrl-C is the lab's to handle.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start lldpd in netns %s: %w", ns.name, err)
	}
	pr := &lldpProc{ns: ns.name, sock: sock, log: logFile, cmd: cmd, done: make(chan struct{})}
	f.lldp.procs[ns.name] = pr
	go func() {
		pr.err = cmd.Wait()
		out.Close()
		close(pr.done)
	}()
	return pr, nil
}

// wait waits for an lldpd's control socket: lldpd holds its LLDPDUs until
// lldpcli has applied the config file, then answers on the socket.
func (pr *lldpProc) wait() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(pr.sock); err == nil {
			return nil
		}
		select {
		case <-pr.done:
			return fmt.Errorf("lldpd in netns %s exited (%w); its log %s ends:\n%s", pr.ns, exitErr(pr.err), pr.log, tail(pr.log, 8))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lldpd in netns %s: no control socket %s after 10s; its log %s ends:\n%s", pr.ns, pr.sock, pr.log, tail(pr.log, 8))
		}
	}
}

// stopLLDPIn stops the lldpd of a namespace, if it runs one: SIGTERM,
// SIGKILL after 5 s. An lldpd holds its namespace: it goes before the
// namespace is deleted.
func (f *Fabric) stopLLDPIn(name string) error {
	if f.lldp == nil {
		return nil
	}
	pr := f.lldp.procs[name]
	if pr == nil {
		return nil
	}
	delete(f.lldp.procs, name)
	select {
	case <-pr.done:
		return nil
	default:
	}
	if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop lldpd in netns %s: %w", name, err)
	}
	select {
	case <-pr.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := pr.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill lldpd in netns %s: %w", name, err)
	}
	<-pr.done
	return nil
}

// stopLLDP stops every lldpd of the lab.
func (f *Fabric) stopLLDP() error {
	if f.lldp == nil {
		return nil
	}
	var errs []error
	for _, name := range sortedKeys(f.lldp.procs) {
		if err := f.stopLLDPIn(name); err != nil {
			errs = append(errs, err)
		}
	}
	f.lldp.active = false
	if f.lldp.ownRun {
		if err := os.RemoveAll(f.lldp.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", f.lldp.dir, err))
		}
		f.lldp.ownRun = false
	}
	return errors.Join(errs...)
}

// removeLLDPRunDir removes LLDPRunDir(prefix) if a lab made it (it holds
// the lab's marker file).
func removeLLDPRunDir(prefix string) error {
	dir := LLDPRunDir(prefix)
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// LLDPNeighbor is a neighbour an lldpd of the lab sees on one of its
// interfaces.
type LLDPNeighbor struct {
	// Interface is the local interface (a host's netdev, a leaf port).
	Interface string
	// NS is the namespace of the lldpd that sees it.
	NS        string
	SysName   string
	ChassisID string
	PortID    string
	PortDescr string
}

// HostLLDPNeighbors are the neighbours host i's lldpd sees, by the
// host's netdev.
// Equivalent to: lldpcli -u <work>/lldpd/<host ns>.sock -f json show neighbors
func (f *Fabric) HostLLDPNeighbors(ctx context.Context, host int) (map[string]LLDPNeighbor, error) {
	f.mu.Lock()
	if f.lldp == nil || !f.lldp.active {
		note := "the lab is not up"
		if f.lldp != nil {
			note = f.lldp.note
		}
		f.mu.Unlock()
		return nil, fmt.Errorf("lab runs no lldpd: %s", note)
	}
	ns, cli := f.hosts[host].ns.name, f.lldp.cli
	f.mu.Unlock()
	return lldpNeighbors(ctx, cli, ns, f.lldpSock(ns))
}

// LeafLLDPNeighbors are the neighbours leaf l's lldpds (in its parking
// and tenant namespaces) see, by leaf port, each from the namespace the
// port is in now.
func (f *Fabric) LeafLLDPNeighbors(ctx context.Context, l int) (map[string]LLDPNeighbor, error) {
	f.mu.Lock()
	if f.lldp == nil || !f.lldp.active {
		f.mu.Unlock()
		return nil, errors.New("lab runs no lldpd")
	}
	lf := f.leaves[l]
	nss := []string{lf.park.name}
	for _, id := range sortedKeys(lf.tenants) {
		nss = append(nss, lf.tenants[id].ns.name)
	}
	// Where each port is now: an lldpd may still list a port that has
	// just left its namespace (Sync, SwapRails).
	home := map[string]string{}
	for _, h := range f.hosts {
		for p, ns := range h.at {
			if ns != nil {
				home[h.ports[p]] = ns.name
			}
		}
	}
	cli := f.lldp.cli
	f.mu.Unlock()
	out := map[string]LLDPNeighbor{}
	for _, ns := range nss {
		m, err := lldpNeighbors(ctx, cli, ns, f.lldpSock(ns))
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			if home[k] == ns {
				out[k] = v
			}
		}
	}
	return out, nil
}

// lldpNeighbors asks an lldpd for its neighbours (lldpcli's JSON: an
// object of interfaces, or a list of one-interface objects when there
// are several).
func lldpNeighbors(ctx context.Context, cli, ns, sock string) (map[string]LLDPNeighbor, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, "-u", sock, "-f", "json", "show", "neighbors").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("lldpcli -u %s show neighbors (netns %s): %w", sock, ns, err)
	}
	var doc struct {
		LLDP map[string]json.RawMessage `json:"lldp"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("lldpcli -u %s: decode: %w", sock, err)
	}
	res := map[string]LLDPNeighbor{}
	raw := doc.LLDP["interface"]
	if len(raw) == 0 {
		return res, nil
	}
	var ifaces []map[string]lldpIface
	if raw[0] == '[' {
		if err := json.Unmarshal(raw, &ifaces); err != nil {
			return nil, fmt.Errorf("lldpcli -u %s: decode interfaces: %w", sock, err)
		}
	} else {
		var one map[string]lldpIface
		if err := json.Unmarshal(raw, &one); err != nil {
			return nil, fmt.Errorf("lldpcli -u %s: decode interfaces: %w", sock, err)
		}
		ifaces = append(ifaces, one)
	}
	for _, m := range ifaces {
		for name, i := range m {
			n := LLDPNeighbor{Interface: name, NS: ns, PortID: i.Port.ID.Value, PortDescr: i.Port.Descr}
			for sys, c := range i.Chassis {
				n.ChassisID = c.ID.Value
				if sys != "id" {
					n.SysName = sys
				}
			}
			res[name] = n
		}
	}
	return res, nil
}

// lldpIface is one interface of lldpcli's JSON: the chassis is keyed by
// its system name (or "id" when it has none).
type lldpIface struct {
	Chassis map[string]struct {
		ID struct {
			Value string `json:"value"`
		} `json:"id"`
	} `json:"chassis"`
	Port struct {
		ID struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"id"`
		Descr string `json:"descr"`
	} `json:"port"`
}

// SwapRails miscables host i: the leaf ports rails a and b reach change
// places, as if their two cables were swapped at the leaf. The leaf ports
// keep their names, namespaces (tenants) and leaf addresses, the host's
// netdevs theirs: the host's rail a now reaches rail b's leaf port, over
// which its addresses do not work, and the leaf's LLDP tells it so.
// Swapping them again restores the cabling. Rail reports the cabling in
// CabledPort.
//
// The leaf ends are veths: each goes down, its addresses flushed, (with
// lldpd, until the host's lldpd has dropped the neighbours on the two
// rails,) then changes name (and namespace) with the other, is configured
// as the port it now is and brought up.
func (f *Fabric) SwapRails(host, a, b int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("swap rails: the lab is down")
	}
	if host < 0 || host >= len(f.hosts) {
		return fmt.Errorf("swap rails: no host %d (0-%d)", host, len(f.hosts)-1)
	}
	h := f.hosts[host]
	if a < 0 || b < 0 || a >= len(h.ports) || b >= len(h.ports) || a == b {
		return fmt.Errorf("swap rails %d and %d of %s: want two different rails of 0-%d", a, b, h.node.Name, len(h.ports)-1)
	}
	pa, pb := h.cable[a], h.cable[b] // the ports the rails reach now
	tmp := func(p int) string { return fmt.Sprintf("sw%dr%d", host, p) }
	for _, p := range []int{pa, pb} {
		ns := h.at[p]
		link, err := ns.nl.LinkByName(h.ports[p])
		if err != nil {
			return fmt.Errorf("swap rails: find %s in netns %s: %w", h.ports[p], ns.name, err)
		}
		// Equivalent to: ip -n $ns link set $port down; ip -n $ns address flush dev $port scope global; ip -n $ns link set $port name sw<i>r<p>
		if err := ns.nl.LinkSetDown(link); err != nil {
			return fmt.Errorf("swap rails: set %s down in netns %s: %w", h.ports[p], ns.name, err)
		}
		if err := flushAddrs(ns, link); err != nil {
			return fmt.Errorf("swap rails: %w", err)
		}
		if err := ns.nl.LinkSetName(link, tmp(p)); err != nil {
			return fmt.Errorf("swap rails: rename %s in netns %s: %w", h.ports[p], ns.name, err)
		}
	}
	// Unplugged: wait until the host's lldpd has let the leaf's
	// neighbours on the two rails go, as it would over a real recabling
	// (a link down for seconds); otherwise it would hold the old and the
	// new one side by side until the old one's TTL ran out.
	if err := f.waitNoNeighbor(h, []string{h.netdevs[a], h.netdevs[b]}, 4*LLDPTxInterval+2*time.Second); err != nil {
		return fmt.Errorf("swap rails: %w", err)
	}
	// The veth that was port pa becomes port pb, and the other way round.
	for _, x := range [][2]int{{pa, pb}, {pb, pa}} {
		from, to := h.at[x[0]], h.at[x[1]]
		link, err := from.nl.LinkByName(tmp(x[0]))
		if err != nil {
			return fmt.Errorf("swap rails: find %s in netns %s: %w", tmp(x[0]), from.name, err)
		}
		if from != to {
			// Equivalent to: ip -n $from link set sw<i>r<p> netns $to
			if err := from.nl.LinkSetNsFd(link, int(to.h)); err != nil {
				return fmt.Errorf("swap rails: move %s from netns %s to %s: %w", tmp(x[0]), from.name, to.name, err)
			}
			if link, err = to.nl.LinkByName(tmp(x[0])); err != nil {
				return fmt.Errorf("swap rails: find %s in netns %s: %w", tmp(x[0]), to.name, err)
			}
		}
		// Equivalent to: ip -n $to link set sw<i>r<p> name h<i>r<q>
		if err := to.nl.LinkSetName(link, h.ports[x[1]]); err != nil {
			return fmt.Errorf("swap rails: rename %s to %s in netns %s: %w", tmp(x[0]), h.ports[x[1]], to.name, err)
		}
	}
	h.cable[a], h.cable[b] = pb, pa
	for _, p := range []int{pa, pb} {
		if err := f.configurePort(h, p); err != nil {
			return fmt.Errorf("swap rails: %w", err)
		}
	}
	// The ports went down and up: wait for the link watch where the host
	// end is up (see WaitRailsUp).
	return f.waitCablesUp(h, []int{a, b}, 5*time.Second)
}

// waitCablesUp waits until the leaf ports host rails reach are
// operationally up, for the rails whose host end is up.
func (f *Fabric) waitCablesUp(h *host, rails []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, r := range rails {
		link, err := h.ns.nl.LinkByName(h.netdevs[r])
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", h.netdevs[r], h.ns.name, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			continue
		}
		p := h.cable[r]
		if err := waitOperUp(h.at[p], h.ports[p], deadline, timeout); err != nil {
			return err
		}
	}
	return nil
}

// flushAddrs deletes a link's addresses but IPv6 link-local ones.
func flushAddrs(ns *namespace, link netlink.Link) error {
	have, err := ns.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s in netns %s: %w", link.Attrs().Name, ns.name, err)
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		del := a
		if err := ns.nl.AddrDel(link, &del); err != nil {
			return fmt.Errorf("delete %s from %s in netns %s: %w", a.IPNet, link.Attrs().Name, ns.name, err)
		}
	}
	return nil
}

// Miscabled lists host i's rails that do not reach their own leaf port
// (SwapRails), in rail order.
func (f *Fabric) Miscabled(host int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for r, p := range f.hosts[host].cable {
		if p != r {
			out = append(out, r)
		}
	}
	sort.Ints(out)
	return out
}

// miscabledList names the swapped rails of every host ("" : none).
func (f *Fabric) miscabledList() string {
	var out []string
	for i := range f.hosts {
		if bad := f.Miscabled(i); len(bad) > 0 {
			out = append(out, fmt.Sprintf("%s rails %v", f.Node(i), bad))
		}
	}
	return strings.Join(out, ", ")
}

// waitNoNeighbor waits until host h's lldpd lists no neighbour on the
// netdevs (with the lab's lldpd; after timeout it goes on).
func (f *Fabric) waitNoNeighbor(h *host, netdevs []string, timeout time.Duration) error {
	if f.lldp == nil || !f.lldp.active {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		seen, err := lldpNeighbors(ctx, f.lldp.cli, h.ns.name, f.lldpSock(h.ns.name))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		left := false
		for _, n := range netdevs {
			_, ok := seen[n]
			left = left || ok
		}
		if !left {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
