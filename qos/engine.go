package qos

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Files is the rooted file access the engine needs: sysfs, and debugfs and
// configfs below it (kernel/debug, kernel/config). *nic.FS is the real one.
type Files interface {
	ReadString(p string) (string, error)
	ReadDir(p string) ([]string, error)
	Exists(p string) bool
	WriteFile(p, value string) error
	Mkdir(p string) error
	HostPath(p string) string
}

// Target is one rail NIC.
type Target struct {
	Rail       int
	Netdev     string
	RDMADevice string // "" when the rail has no RDMA device
	Port       int
	PCI        string
	Driver     string
}

// Group names a set of knobs applied all or nothing per NIC.
type Group string

// The groups, in the order they apply.
const (
	GroupDCB   Group = "dcb"   // DCBX mode, trust, DSCP map, PFC, ETS
	GroupToS   Group = "tos"   // rdma_cm default ToS and mode
	GroupDCQCN Group = "dcqcn" // congestion control
)

// Change is one write, rendered as the command it equals.
type Change struct {
	Rail    int
	Netdev  string
	Group   Group
	Command string
	// Knob is the setting the change is about: one of the Knob constants.
	Knob Knob
	// Was is what the NIC has now, as the command's words would say it
	// ("" when it has nothing or it was not read).
	Was string
	do  func() error
}

// Knob is one QoS setting, finer than a group: what `roce-agent diag`
// reports each change under.
type Knob string

// The knobs.
const (
	KnobDCBX  Knob = "dcbx"
	KnobTrust Knob = "trust"
	KnobDSCP  Knob = "dscp-map"
	KnobPFC   Knob = "pfc"
	KnobETS   Knob = "ets"
	KnobToS   Knob = "tos"
	KnobDCQCN Knob = "dcqcn"
)

// Unsupported says a group cannot be applied on a NIC, and why. It is a
// condition, not an error: the rest of the NIC's QoS still applies.
type Unsupported struct {
	Rail   int
	Netdev string
	Group  Group
	Reason string
}

func (u Unsupported) String() string {
	return fmt.Sprintf("rail %d (%s): %s: unsupported: %s", u.Rail, u.Netdev, u.Group, u.Reason)
}

// Plan is the QoS changes for every rail NIC.
type Plan struct {
	Changes     []Change
	Unsupported []Unsupported
	// Errs are NICs whose state could not be read: no change is planned
	// for them.
	Errs []RailError
}

// RailError is a failure tied to a rail.
type RailError struct {
	Rail   int
	Netdev string
	Err    error
}

func (e RailError) Error() string { return fmt.Sprintf("rail %d (%s): %v", e.Rail, e.Netdev, e.Err) }

// Engine plans and applies QoS on rail NICs.
type Engine struct {
	Files Files
	// DCB is the dcbnl client of the rails' namespace; nil when it could
	// not be opened (DCBErr says why).
	DCB    DCBClient
	DCBErr error
}

// DCBClient is the dcbnl operations the engine uses; *DCB is the real
// one.
type DCBClient interface {
	IEEE(dev string) (IEEE, error)
	SetIEEE(dev string, s IEEE) error
	DelApps(dev string, apps []App) error
	DCBX(dev string) (uint8, error)
	SetDCBX(dev string, mode uint8) error
}

var _ DCBClient = (*DCB)(nil)

// Plan reads every target's QoS state and returns the writes that would
// make it match the profile. It changes nothing.
func (e *Engine) Plan(p Profile, targets []Target) Plan {
	var plan Plan
	for _, t := range targets {
		for _, g := range []struct {
			group Group
			fn    func(Profile, Target) ([]Change, string, error)
		}{{GroupDCB, e.planDCB}, {GroupToS, e.planToS}, {GroupDCQCN, e.planDCQCN}} {
			changes, unsupported, err := g.fn(p, t)
			switch {
			case err != nil:
				plan.Errs = append(plan.Errs, RailError{t.Rail, t.Netdev, fmt.Errorf("%s: %w", g.group, err)})
			case unsupported != "":
				plan.Unsupported = append(plan.Unsupported, Unsupported{t.Rail, t.Netdev, g.group, unsupported})
			default:
				for i := range changes {
					changes[i].Rail, changes[i].Netdev, changes[i].Group = t.Rail, t.Netdev, g.group
				}
				plan.Changes = append(plan.Changes, changes...)
			}
		}
	}
	return plan
}

// Result is how one rail's QoS fared.
type Result struct {
	Rail    int
	Netdev  string
	Applied []string
	Err     error
}

// Apply makes the plan's changes rail by rail in order; a failure stops
// that rail's remaining changes, other rails go on.
func (e *Engine) Apply(plan Plan) []Result {
	var out []Result
	idx := map[int]int{}
	failed := map[int]bool{}
	for _, c := range plan.Changes {
		i, ok := idx[c.Rail]
		if !ok {
			out = append(out, Result{Rail: c.Rail, Netdev: c.Netdev})
			i = len(out) - 1
			idx[c.Rail] = i
		}
		if failed[c.Rail] {
			continue
		}
		if err := c.do(); err != nil {
			out[i].Err = fmt.Errorf("%s: %w", c.Command, err)
			failed[c.Rail] = true
			continue
		}
		out[i].Applied = append(out[i].Applied, c.Command)
	}
	return out
}

// ---- dcbnl: DCBX, trust, DSCP map, PFC, ETS ----

func (e *Engine) planDCB(p Profile, t Target) ([]Change, string, error) {
	if p.DCBX == "" && p.Trust == "" && p.PFC == nil && len(p.DSCPToPriority) == 0 && p.ETS == nil {
		return nil, "", nil // nothing of this group asked for
	}
	if e.DCB == nil {
		return nil, fmt.Sprintf("dcbnl socket unavailable: %v", e.DCBErr), nil
	}
	dev := t.Netdev
	st, err := e.DCB.IEEE(dev)
	if errors.Is(err, ErrUnsupported) {
		return nil, fmt.Sprintf("%s has no dcbnl (DCB) support: %v", dev, err), nil
	}
	if errors.Is(err, ErrNoDevice) {
		// The inventory came from a tree (--sysfs-root) or another
		// namespace: the kernel this socket talks to has no such netdev.
		return nil, fmt.Sprintf("netdev %s is not in this network namespace: %v", dev, err), nil
	}
	if err != nil {
		return nil, "", err
	}
	var out []Change

	if p.DCBX == "host" {
		mode, err := e.DCB.DCBX(dev)
		if err != nil && !errors.Is(err, ErrUnsupported) {
			return nil, "", err
		}
		if err == nil && mode&DCBXHost == 0 {
			out = append(out, Change{Command: fmt.Sprintf("dcb dcbx set dev %s host ieee", dev), Knob: KnobDCBX, Was: fmt.Sprintf("dcbx mode 0x%02x (not host)", mode),
				do: func() error { return e.DCB.SetDCBX(dev, DCBXHost|DCBXVerIEEE) }})
		}
	}

	// MLNX_OFED exposes trust in sysfs; upstream mlx5 derives it from the
	// DSCP APP entries (the first one switches the port to DSCP trust).
	trustFile := path.Join("/class/net", dev, "qos", "trust")
	if p.Trust != "" && e.Files.Exists(trustFile) {
		cur, err := e.Files.ReadString(trustFile)
		if err != nil {
			return nil, "", fmt.Errorf("read %s: %w", e.Files.HostPath(trustFile), err)
		}
		if cur != p.Trust {
			c := e.echo(trustFile, p.Trust)
			c.Knob, c.Was = KnobTrust, "trust "+cur
			out = append(out, c)
		}
	}

	have := map[uint16][]uint8{} // DSCP -> priorities
	for _, a := range st.Apps {
		if a.Selector == AppSelectorDSCP {
			have[a.Protocol] = append(have[a.Protocol], a.Priority)
		}
	}
	var add, del []App
	mlx5 := t.Driver == "mlx5_core"
	for _, d := range sortedKeys(p.DSCPToPriority) {
		want := uint8(p.DSCPToPriority[d])
		prios := have[uint16(d)]
		if p.Trust == "pcp" {
			for _, pr := range prios {
				del = append(del, App{AppSelectorDSCP, pr, uint16(d)})
			}
			continue
		}
		if !containsU8(prios, want) {
			add = append(add, App{AppSelectorDSCP, want, uint16(d)})
		}
		// The generic APP list keeps every (DSCP, priority) pair; mlx5
		// replaces the old mapping itself.
		if !mlx5 {
			for _, pr := range prios {
				if pr != want {
					del = append(del, App{AppSelectorDSCP, pr, uint16(d)})
				}
			}
		}
	}
	if len(add) > 0 {
		out = append(out, Change{Command: fmt.Sprintf("dcb app add dev %s dscp-prio %s", dev, appList(add)), Knob: KnobDSCP, Was: dscpWas(add, have),
			do: func() error { return e.DCB.SetIEEE(dev, IEEE{Apps: add}) }})
	}
	if len(del) > 0 {
		out = append(out, Change{Command: fmt.Sprintf("dcb app del dev %s dscp-prio %s", dev, appList(del)), Knob: KnobDSCP, Was: "dscp-prio " + appList(del),
			do: func() error { return e.DCB.DelApps(dev, del) }})
	}

	// PFC is written only when the enabled set differs: on mlx5 every PFC
	// write toggles the port (a link flap).
	if p.PFC != nil {
		var want uint8
		for _, prio := range p.PFC {
			want |= 1 << prio
		}
		cur := PFC{Cap: 8}
		if st.PFC != nil {
			cur = *st.PFC
		}
		if st.PFC == nil || cur.Enable != want {
			set := PFC{Cap: cur.Cap, Enable: want, MBC: cur.MBC, Delay: cur.Delay}
			was := "no PFC state"
			if st.PFC != nil {
				was = "prio-pfc " + pfcList(cur.Enable)
			}
			out = append(out, Change{Command: fmt.Sprintf("dcb pfc set dev %s prio-pfc %s", dev, pfcList(want)), Knob: KnobPFC, Was: was,
				do: func() error { return e.DCB.SetIEEE(dev, IEEE{PFC: &set}) }})
		}
	}

	if p.ETS != nil {
		want := etsOf(*p.ETS)
		if st.ETS != nil {
			want.Cap = st.ETS.Cap
		}
		if st.ETS == nil || st.ETS.TCTSA != want.TCTSA || st.ETS.TCTxBW != want.TCTxBW || st.ETS.PrioTC != want.PrioTC {
			out = append(out, Change{Command: fmt.Sprintf("dcb ets set dev %s %s", dev, etsArgs(*p.ETS)), Knob: KnobETS, Was: etsWas(st.ETS),
				do: func() error { return e.DCB.SetIEEE(dev, IEEE{ETS: &want}) }})
		}
	}
	return out, "", nil
}

// dscpWas says what the NIC maps the DSCP values of add to now.
func dscpWas(add []App, have map[uint16][]uint8) string {
	var parts []string
	for _, a := range add {
		prios := have[a.Protocol]
		if len(prios) == 0 {
			parts = append(parts, fmt.Sprintf("%d:none", a.Protocol))
			continue
		}
		for _, p := range prios {
			parts = append(parts, fmt.Sprintf("%d:%d", a.Protocol, p))
		}
	}
	return "dscp-prio " + strings.Join(parts, " ")
}

// etsWas renders the NIC's ETS state like etsArgs.
func etsWas(e *ETS) string {
	if e == nil {
		return "no ETS state"
	}
	tsaName := map[uint8]string{0: "strict", 2: "ets", 255: "vendor"}
	var tsa, bw, prio []string
	for i := 0; i < 8; i++ {
		name, ok := tsaName[e.TCTSA[i]]
		if !ok {
			name = strconv.Itoa(int(e.TCTSA[i]))
		}
		tsa = append(tsa, fmt.Sprintf("%d:%s", i, name))
		bw = append(bw, fmt.Sprintf("%d:%d", i, e.TCTxBW[i]))
		prio = append(prio, fmt.Sprintf("%d:%d", i, e.PrioTC[i]))
	}
	return "tc-tsa " + strings.Join(tsa, " ") + " tc-bw " + strings.Join(bw, " ") + " prio-tc " + strings.Join(prio, " ")
}

func containsU8(list []uint8, v uint8) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func appList(apps []App) string {
	parts := make([]string, len(apps))
	for i, a := range apps {
		parts[i] = fmt.Sprintf("%d:%d", a.Protocol, a.Priority)
	}
	return strings.Join(parts, " ")
}

func pfcList(bits uint8) string {
	parts := make([]string, 8)
	for i := range parts {
		state := "off"
		if bits&(1<<i) != 0 {
			state = "on"
		}
		parts[i] = fmt.Sprintf("%d:%s", i, state)
	}
	return strings.Join(parts, " ")
}

var tsaCodes = map[string]uint8{"strict": 0, "ets": 2, "vendor": 255}

func etsOf(p ETSProfile) ETS {
	var e ETS
	for i := 0; i < 8; i++ {
		e.PrioTC[i] = uint8(p.PrioTC[i])
		e.TCTSA[i] = tsaCodes[p.TSA[i]]
		e.TCTxBW[i] = uint8(p.BW[i])
	}
	return e
}

func etsArgs(p ETSProfile) string {
	var tsa, bw, prio []string
	for i := 0; i < 8; i++ {
		tsa = append(tsa, fmt.Sprintf("%d:%s", i, p.TSA[i]))
		bw = append(bw, fmt.Sprintf("%d:%d", i, p.BW[i]))
		prio = append(prio, fmt.Sprintf("%d:%d", i, p.PrioTC[i]))
	}
	return "tc-tsa " + strings.Join(tsa, " ") + " tc-bw " + strings.Join(bw, " ") + " prio-tc " + strings.Join(prio, " ")
}

// ---- rdma_cm default ToS and mode (configfs) ----

const configfsRDMACM = "/kernel/config/rdma_cm"

func (e *Engine) planToS(p Profile, t Target) ([]Change, string, error) {
	if p.RoCETos == nil && p.RoCEMode == "" {
		return nil, "", nil
	}
	if t.RDMADevice == "" {
		return nil, "the rail has no RDMA device", nil
	}
	if !e.Files.Exists(configfsRDMACM) {
		return nil, fmt.Sprintf("%s is missing: configfs is not mounted at /sys/kernel/config or rdma_cm is not loaded", e.Files.HostPath(configfsRDMACM)), nil
	}
	port := t.Port
	if port == 0 {
		port = 1
	}
	dev := path.Join(configfsRDMACM, t.RDMADevice)
	portDir := path.Join(dev, "ports", strconv.Itoa(port))
	var out []Change
	exists := e.Files.Exists(dev)
	if !exists {
		// The group is created once and kept, so later reads need no write.
		out = append(out, Change{Command: "mkdir " + e.Files.HostPath(dev), Knob: KnobToS, Was: "no rdma_cm group for " + t.RDMADevice, do: func() error { return e.Files.Mkdir(dev) }})
	}
	want := map[string]string{}
	if p.RoCEMode != "" {
		want["default_roce_mode"] = p.RoCEMode
	}
	if p.RoCETos != nil {
		want["default_roce_tos"] = strconv.Itoa(*p.RoCETos)
	}
	for _, name := range sortedKeys(want) {
		file := path.Join(portDir, name)
		if exists {
			cur, err := e.Files.ReadString(file)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, "", fmt.Errorf("read %s: %w", e.Files.HostPath(file), err)
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Sprintf("%s has no port %d", t.RDMADevice, port), nil
			}
			if cur == want[name] {
				continue
			}
			c := e.echo(file, want[name])
			c.Knob, c.Was = KnobToS, name+" "+cur
			out = append(out, c)
			continue
		}
		c := e.echo(file, want[name])
		c.Knob = KnobToS
		out = append(out, c)
	}
	return out, "", nil
}

// echo is a write of one attribute, rendered as the shell command.
func (e *Engine) echo(file, value string) Change {
	shown := value
	if strings.Contains(value, " ") {
		shown = strconv.Quote(value)
	}
	return Change{Command: fmt.Sprintf("echo %s > %s", shown, e.Files.HostPath(file)), do: func() error { return e.Files.WriteFile(file, value) }}
}
