package qos

import (
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"
	"testing"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
)

// recorder is the engine's Files over a fixture tree, logging every write
// and emulating configfs: creating an rdma_cm or bnxt_re group creates its
// attributes, as the kernel does.
type recorder struct {
	*nic.FS
	tree *sysfstest.Tree
	log  []string
}

func (r *recorder) WriteFile(p, v string) error {
	if !r.FS.Exists(p) {
		return &os.PathError{Op: "open", Path: r.HostPath(p), Err: syscall.ENOENT}
	}
	r.log = append(r.log, fmt.Sprintf("write %s = %s", p, v))
	return r.FS.WriteFile(p, v)
}

func (r *recorder) Mkdir(p string) error {
	r.log = append(r.log, "mkdir "+p)
	if err := r.FS.Mkdir(p); err != nil {
		return err
	}
	switch path.Dir(p) {
	case "/kernel/config/rdma_cm":
		r.tree.WriteFile(p+"/ports/1/default_roce_mode", "RoCE v2")
		r.tree.WriteFile(p+"/ports/1/default_roce_tos", "0")
	case "/kernel/config/bnxt_re":
		for _, f := range []string{"ecn_enable", "cnp_dscp", "cnp_prio", "roce_dscp", "roce_prio", "apply"} {
			r.tree.WriteFile(p+"/ports/1/cc/"+f, "0x0")
		}
	}
	return r.tree.Err()
}

// fakeNIC is a dcbnl peer with a port's state. mlx5 replaces a DSCP's
// mapping on set; generic drivers (bnxt) keep every (DSCP, priority) pair.
type fakeNIC struct {
	mlx5        bool
	unsupported bool
	apps        []App
	pfc         PFC
	dcbx        uint8
	pfcWrites   int
	requests    int
}

func (f *fakeNIC) Exchange(req []byte) ([][]byte, error) {
	f.requests++
	seq := binary.NativeEndian.Uint32(req[8:])
	if f.unsupported {
		return [][]byte{ack(seq, syscall.EOPNOTSUPP)}, nil
	}
	msgs, err := parseMessages(req)
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("bad request: %v", err)
	}
	in, _ := ParseIEEEGet(msgs[0].attrs)
	switch req[17] {
	case cmdIEEEGet:
		var apps [][]byte
		for _, a := range f.apps {
			apps = append(apps, attr(attrIEEEApp, a.marshal()))
		}
		return [][]byte{replyMsg(rtmGetDCB, cmdIEEEGet, seq, ifname("x"), nested(attrIEEE, attr(attrIEEEPFC, f.pfc.Marshal()), nested(attrIEEEAppTable, apps...))), ack(seq, 0)}, nil
	case cmdIEEESet:
		if in.PFC != nil {
			f.pfc.Enable = in.PFC.Enable
			f.pfcWrites++
		}
		for _, a := range in.Apps {
			if f.mlx5 {
				f.del(App{a.Selector, 0xff, a.Protocol})
			}
			f.apps = append(f.apps, a)
		}
		return [][]byte{replyMsg(rtmSetDCB, cmdIEEESet, seq, attr(attrIEEE, []byte{0})), ack(seq, 0)}, nil
	case cmdIEEEDel:
		for _, a := range in.Apps {
			f.del(a)
		}
		return [][]byte{replyMsg(rtmSetDCB, cmdIEEEDel, seq, attr(attrIEEE, []byte{0})), ack(seq, 0)}, nil
	case cmdGDCBX:
		return [][]byte{replyMsg(rtmGetDCB, cmdGDCBX, seq, attr(attrDCBX, []byte{f.dcbx})), ack(seq, 0)}, nil
	case cmdSDCBX:
		for _, a := range msgs[0].attrs {
			if a.typ == attrDCBX {
				f.dcbx = a.data[0]
			}
		}
		return [][]byte{replyMsg(rtmSetDCB, cmdSDCBX, seq, attr(attrDCBX, []byte{0})), ack(seq, 0)}, nil
	}
	return [][]byte{ack(seq, syscall.EINVAL)}, nil
}

// del removes matching entries; priority 0xff matches any.
func (f *fakeNIC) del(a App) {
	kept := f.apps[:0]
	for _, x := range f.apps {
		if x.Selector == a.Selector && x.Protocol == a.Protocol && (a.Priority == 0xff || a.Priority == x.Priority) {
			continue
		}
		kept = append(kept, x)
	}
	f.apps = kept
}

func intp(v int) *int { return &v }

func boolp(v bool) *bool { return &v }

// roceProfile is design.md's default: DSCP 26 -> priority 3 with PFC on 3,
// CNP DSCP 48 -> priority 6, rdma_cm ToS 106.
func roceProfile() Profile {
	return Profile{
		Trust: "dscp", PFC: []int{3}, DSCPToPriority: map[int]int{26: 3, 48: 6}, DCBX: "host",
		RoCETos: intp(106), RoCEMode: "RoCE v2",
		DCQCN: &DCQCNProfile{Enabled: boolp(true), NP: map[string]int64{"cnp_dscp": 48, "cnp_prio": 6}, RP: map[string]int64{"dce_tcp_g": 1019}},
	}
}

type host struct {
	files  *recorder
	target Target
}

// newHost builds a tree with one NIC of the given driver; extra adds the
// driver's QoS interfaces.
func newHost(t *testing.T, driver, rdma string, extra func(tree *sysfstest.Tree)) host {
	t.Helper()
	tree := sysfstest.New(t.TempDir())
	fn := tree.HostBridge("0000:17", 0).Bridge("0000:17:01.0", 0x8086, 1).Function("0000:18:00.0",
		sysfstest.PCIFunc{Vendor: 0x15b3, Device: 0x1021, Class: 0x020000, Driver: driver})
	fn.AddNetdev("eth0", sysfstest.Netdev{MAC: "02:00:00:00:00:01", MTU: 9000})
	fn.AddRDMA(rdma, sysfstest.RDMADevice{Ports: []sysfstest.RDMAPort{{State: "4: ACTIVE", LinkLayer: "Ethernet"}}})
	tree.WriteFile("/kernel/config/rdma_cm/.keep", "")
	tree.Remove("/kernel/config/rdma_cm/.keep")
	if extra != nil {
		extra(tree)
	}
	if tree.Err() != nil {
		t.Fatal(tree.Err())
	}
	fs, err := nic.NewFS(tree.Root())
	if err != nil {
		t.Fatal(err)
	}
	return host{&recorder{FS: fs, tree: tree}, Target{Rail: 0, Netdev: "eth0", RDMADevice: rdma, Port: 1, PCI: "0000:18:00.0", Driver: driver}}
}

func mlx5Debugfs(tree *sysfstest.Tree) {
	for _, f := range []string{"rp_clamp_tgt_rate", "rp_clamp_tgt_rate_ati", "rp_time_reset", "rp_byte_reset", "rp_threshold",
		"rp_ai_rate", "rp_hai_rate", "rp_min_dec_fac", "rp_min_rate", "rp_rate_to_set_on_first_cnp", "rp_dce_tcp_g",
		"rp_dce_tcp_rtt", "rp_rate_reduce_monitor_period", "rp_initial_alpha_value", "rp_gd", "np_cnp_dscp", "np_cnp_prio_mode", "np_cnp_prio"} {
		tree.WriteFile("/kernel/debug/mlx5/0000:18:00.0/cc_params/"+f, "0")
	}
	tree.WriteFile("/kernel/debug/mlx5/0000:18:00.0/cc_params/rp_dce_tcp_g", "1019")
	tree.WriteFile("/kernel/debug/mlx5/0000:18:00.0/cc_params/np_cnp_prio_mode", "1")
}

func ofedSysfs(tree *sysfstest.Tree) {
	base := "/devices/pci0000:17/0000:17:01.0/0000:18:00.0/net/eth0"
	tree.WriteFile(base+"/qos/trust", "pcp")
	for _, point := range []string{"roce_np", "roce_rp"} {
		for prio := 0; prio < 8; prio++ {
			tree.WriteFile(fmt.Sprintf("%s/ecn/%s/enable/%d", base, point, prio), "0")
		}
	}
	for _, f := range []string{"min_time_between_cnps", "cnp_dscp", "cnp_802p_prio"} {
		tree.WriteFile(base+"/ecn/roce_np/"+f, "0")
	}
	for _, f := range []string{"dce_tcp_g", "rpg_max_rate", "rpg_gd"} {
		tree.WriteFile(base+"/ecn/roce_rp/"+f, "0")
	}
}

func bnxtConfigfs(tree *sysfstest.Tree) {
	tree.WriteFile("/kernel/config/bnxt_re/.keep", "")
	tree.Remove("/kernel/config/bnxt_re/.keep")
}

func transcript(plan Plan) string {
	var b strings.Builder
	for _, u := range plan.Unsupported {
		b.WriteString(u.String() + "\n")
	}
	for _, e := range plan.Errs {
		b.WriteString("error " + e.Error() + "\n")
	}
	for _, c := range plan.Changes {
		fmt.Fprintf(&b, "%s: %s\n", c.Group, c.Command)
	}
	return b.String()
}

func applyAndConverge(t *testing.T, e *Engine, p Profile, h host, dcb *fakeNIC) {
	t.Helper()
	for _, r := range e.Apply(e.Plan(p, []Target{h.target})) {
		if r.Err != nil {
			t.Fatalf("apply: %v", r.Err)
		}
	}
	pfcWrites, logged := dcb.pfcWrites, len(h.files.log)
	if again := transcript(e.Plan(p, []Target{h.target})); again != "" {
		t.Errorf("not converged after apply:\n%s", again)
	}
	if dcb.pfcWrites != pfcWrites || len(h.files.log) != logged {
		t.Errorf("planning a converged NIC wrote something")
	}
}

func TestMLX5Upstream(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", mlx5Debugfs)
	dcb := &fakeNIC{mlx5: true}
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	root := h.files.Root()
	want := strings.ReplaceAll(`dcb: dcb dcbx set dev eth0 host ieee
dcb: dcb app add dev eth0 dscp-prio 26:3 48:6
dcb: dcb pfc set dev eth0 prio-pfc 0:off 1:off 2:off 3:on 4:off 5:off 6:off 7:off
tos: mkdir ROOT/kernel/config/rdma_cm/mlx5_0
tos: echo "RoCE v2" > ROOT/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_mode
tos: echo 106 > ROOT/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_tos
dcqcn: echo 48 > ROOT/kernel/debug/mlx5/0000:18:00.0/cc_params/np_cnp_dscp
dcqcn: echo 6 > ROOT/kernel/debug/mlx5/0000:18:00.0/cc_params/np_cnp_prio
`, "ROOT", root)
	if got := transcript(e.Plan(roceProfile(), []Target{h.target})); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	applyAndConverge(t, e, roceProfile(), h, dcb)
	if dcb.pfc.Enable != 0x08 || dcb.dcbx != 0x09 || len(dcb.apps) != 2 || dcb.pfcWrites != 1 {
		t.Errorf("NIC state: %+v", dcb)
	}
	if v, _ := h.files.ReadString("/kernel/debug/mlx5/0000:18:00.0/cc_params/rp_dce_tcp_g"); v != "1019" {
		t.Errorf("rp_dce_tcp_g rewritten: %s", v)
	}

	// The rdma device re-registered: configfs values are back to defaults
	// and get applied again.
	h.files.tree.WriteFile("/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_tos", "0")
	if got := transcript(e.Plan(roceProfile(), []Target{h.target})); got != "tos: echo 106 > "+root+"/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_tos\n" {
		t.Errorf("after re-registration:\n%s", got)
	}
}

// A port that firmware already trusts for DSCP shows all 64 entries
// (DSCP d on priority d>>3): only the named entries that differ change,
// and PFC that is already right is not written.
func TestMLX5AlreadyDSCPTrusted(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", mlx5Debugfs)
	dcb := &fakeNIC{mlx5: true, dcbx: DCBXHost | DCBXVerIEEE, pfc: PFC{Cap: 8, Enable: 0x08}}
	for d := 0; d < 64; d++ {
		dcb.apps = append(dcb.apps, App{AppSelectorDSCP, uint8(d >> 3), uint16(d)})
	}
	p := roceProfile()
	p.RoCETos, p.RoCEMode, p.DCQCN = nil, "", nil
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	// 26>>3 = 3 already; 48>>3 = 6 already.
	if got := transcript(e.Plan(p, []Target{h.target})); got != "" {
		t.Errorf("plan:\n%s", got)
	}
	p.DSCPToPriority = map[int]int{26: 4, 48: 6}
	p.PFC = []int{4}
	want := "dcb: dcb app add dev eth0 dscp-prio 26:4\ndcb: dcb pfc set dev eth0 prio-pfc 0:off 1:off 2:off 3:off 4:on 5:off 6:off 7:off\n"
	if got := transcript(e.Plan(p, []Target{h.target})); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	applyAndConverge(t, e, p, h, dcb)
	if len(dcb.apps) != 64 {
		t.Errorf("mlx5 replaces the mapping: %d entries", len(dcb.apps))
	}
}

func TestMLNXOFED(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", ofedSysfs)
	dcb := &fakeNIC{mlx5: true, dcbx: DCBXHost}
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	p := roceProfile()
	p.RoCETos, p.RoCEMode = nil, ""
	p.DCQCN.NP["min_time_between_cnps"] = 4
	p.DCQCN.RP = map[string]int64{"max_rate": 0, "gd": 11}
	base := h.files.Root() + "/class/net/eth0"
	want := strings.ReplaceAll(`dcb: echo dscp > BASE/qos/trust
dcb: dcb app add dev eth0 dscp-prio 26:3 48:6
dcb: dcb pfc set dev eth0 prio-pfc 0:off 1:off 2:off 3:on 4:off 5:off 6:off 7:off
dcqcn: echo 1 > BASE/ecn/roce_np/enable/3
dcqcn: echo 1 > BASE/ecn/roce_rp/enable/3
dcqcn: echo 48 > BASE/ecn/roce_np/cnp_dscp
dcqcn: echo 6 > BASE/ecn/roce_np/cnp_802p_prio
dcqcn: echo 4 > BASE/ecn/roce_np/min_time_between_cnps
dcqcn: echo 11 > BASE/ecn/roce_rp/rpg_gd
`, "BASE", base)
	if got := transcript(e.Plan(p, []Target{h.target})); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	applyAndConverge(t, e, p, h, dcb)
}

func TestBnxtRE(t *testing.T) {
	h := newHost(t, "bnxt_en", "bnxt_re0", bnxtConfigfs)
	dcb := &fakeNIC{dcbx: DCBXHost | DCBXVerIEEE, apps: []App{{AppSelectorDSCP, 0, 26}}}
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	p := roceProfile()
	p.RoCETos, p.RoCEMode = nil, ""
	p.DCQCN.RP = nil
	cc := h.files.Root() + "/kernel/config/bnxt_re/bnxt_re0"
	want := strings.ReplaceAll(`dcb: dcb app add dev eth0 dscp-prio 26:3 48:6
dcb: dcb app del dev eth0 dscp-prio 26:0
dcb: dcb pfc set dev eth0 prio-pfc 0:off 1:off 2:off 3:on 4:off 5:off 6:off 7:off
dcqcn: mkdir CC
dcqcn: echo 0x1 > CC/ports/1/cc/ecn_enable
dcqcn: echo 0x30 > CC/ports/1/cc/cnp_dscp
dcqcn: echo 0x6 > CC/ports/1/cc/cnp_prio
dcqcn: echo 0x1 > CC/ports/1/cc/apply
`, "CC", cc)
	if got := transcript(e.Plan(p, []Target{h.target})); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	applyAndConverge(t, e, p, h, dcb)
	if len(dcb.apps) != 2 {
		t.Errorf("generic APP list should hold exactly the two entries: %+v", dcb.apps)
	}
}

// A knob the device does not have makes its whole group unsupported on
// that NIC (nothing half-applied); the other groups still apply.
func TestUnsupportedKnob(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", mlx5Debugfs)
	dcb := &fakeNIC{mlx5: true, dcbx: 0x09, pfc: PFC{Cap: 8, Enable: 8}, apps: []App{{5, 3, 26}, {5, 6, 48}}}
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	p := roceProfile()
	p.DCQCN.NP["min_time_between_cnps"] = 4 // MLNX_OFED debugfs only
	plan := e.Plan(p, []Target{h.target})
	got := transcript(plan)
	if !strings.Contains(got, "dcqcn: unsupported: mlx5 debugfs cc_params has no np.min_time_between_cnps") || strings.Contains(got, "cc_params/np_cnp_dscp") || !strings.Contains(got, "tos: echo 106") {
		t.Errorf("plan:\n%s", got)
	}
}

// A NIC without any QoS interface (a veth: no dcbnl, no RDMA device)
// reports every group unsupported and plans nothing.
func TestNoQoSInterfaces(t *testing.T) {
	h := newHost(t, "virtio_net", "rxe0", nil)
	h.target.RDMADevice, h.target.PCI = "", ""
	e := &Engine{Files: h.files, DCB: NewDCB(&fakeNIC{unsupported: true})}
	want := `rail 0 (eth0): dcb: unsupported: eth0 has no dcbnl (DCB) support: dcb ieee get eth0: not supported by the device (EOPNOTSUPP)
rail 0 (eth0): tos: unsupported: the rail has no RDMA device
rail 0 (eth0): dcqcn: unsupported: the rail has no RDMA device
`
	if got := transcript(e.Plan(roceProfile(), []Target{h.target})); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
}

func TestProfileValidate(t *testing.T) {
	p := roceProfile()
	if w, errs := p.Validate("qos"); len(errs) != 0 || len(w) != 0 {
		t.Fatalf("design default: %v %v", w, errs)
	}
	bad := Profile{
		Trust: "cos", PFC: []int{3, 9, 3}, DSCPToPriority: map[int]int{70: 3, 10: 8}, DCBX: "switch",
		RoCETos: intp(300), RoCEMode: "RoCE v3",
		DCQCN: &DCQCNProfile{NP: map[string]int64{"cnp_dscp": 64, "cnp_colour": 1}, RP: map[string]int64{"dce_tcp_g": 2000}},
	}
	_, errs := bad.Validate("qos")
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		`qos.trust: "cos" is not one of dscp, pcp`,
		`qos.dcbx: "switch" is not host`,
		"qos.pfc_priorities[1]: priority 9 is outside 0-7",
		"qos.pfc_priorities[2]: priority 3 is listed twice",
		"qos.dscp_to_priority[70]: DSCP 70 is outside 0-63",
		"qos.dscp_to_priority[10]: priority 8 is outside 0-7",
		"qos.roce_tos: 300 is outside 0-255",
		`qos.roce_mode: "RoCE v3" is not one of`,
		"qos.dcqcn.np.cnp_colour: unknown parameter (known: cnp_dscp, cnp_prio, min_time_between_cnps)",
		"qos.dcqcn.np.cnp_dscp: 64 is outside 0-63",
		"qos.dcqcn.rp.dce_tcp_g: 2000 is outside 0-1023",
	} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(got, "\n"))
		}
	}
	warn := Profile{PFC: []int{3, 5}, DSCPToPriority: map[int]int{26: 3, 10: 1}, RoCETos: intp(40)}
	w, errs := warn.Validate("qos")
	if len(errs) != 0 || strings.Join(w, "\n") != "qos.pfc_priorities: priority 5 has PFC but no DSCP maps to it\nqos.roce_tos: ToS 40 is DSCP 10 on priority 1, which has no PFC" {
		t.Errorf("warnings: %q %v", w, errs)
	}
}

// With an inventory read from a tree, the kernel has no such netdev: the
// dcb group is unsupported and the file-based groups still plan.
func TestNetdevNotInKernel(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", mlx5Debugfs)
	d := NewDCB(&fakePeer{respond: func(_ []byte, seq uint32) [][]byte { return [][]byte{ack(seq, syscall.ENODEV)} }})
	e := &Engine{Files: h.files, DCB: d}
	got := transcript(e.Plan(roceProfile(), []Target{h.target}))
	if !strings.Contains(got, "dcb: unsupported: netdev eth0 is not in this network namespace") || !strings.Contains(got, "dcqcn: echo 48 >") || !strings.Contains(got, "tos: echo 106 >") {
		t.Errorf("plan:\n%s", got)
	}
}

// Every planned change names its knob, and what the NIC has now where it
// was read: diag reports them per knob with observed and expected.
func TestChangesNameKnobAndWas(t *testing.T) {
	h := newHost(t, "mlx5_core", "mlx5_0", mlx5Debugfs)
	h.files.tree.WriteFile("/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_mode", "IB/RoCE v1")
	h.files.tree.WriteFile("/kernel/config/rdma_cm/mlx5_0/ports/1/default_roce_tos", "0")
	dcb := &fakeNIC{mlx5: true, pfc: PFC{Cap: 8, Enable: 0x10}, apps: []App{{AppSelectorDSCP, 1, 26}}}
	e := &Engine{Files: h.files, DCB: NewDCB(dcb)}
	var got []string
	for _, c := range e.Plan(roceProfile(), []Target{h.target}).Changes {
		if c.Knob == "" {
			t.Errorf("%s: no knob", c.Command)
		}
		got = append(got, fmt.Sprintf("%s[%s]", c.Knob, c.Was))
	}
	want := "dcbx[dcbx mode 0x00 (not host)] dscp-map[dscp-prio 26:1 48:none] pfc[prio-pfc 0:off 1:off 2:off 3:off 4:on 5:off 6:off 7:off] " +
		"tos[default_roce_mode IB/RoCE v1] tos[default_roce_tos 0] dcqcn[np_cnp_dscp 0] dcqcn[np_cnp_prio 0]"
	if strings.Join(got, " ") != want {
		t.Errorf("knobs:\n%s\nwant:\n%s", strings.Join(got, " "), want)
	}
}
