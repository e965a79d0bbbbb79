package diag

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/probe"
)

// RoCE checks: the GID table entries NCCL and perftest use, and the
// packet size RoCE runs at.

func init() {
	register(
		Check{
			ID: "ROCE-GID-001", Title: "RoCE v2 GID for each rail address",
			Doc:    "Each desired rail address must appear in its NIC's GID table as a RoCE v2 entry on the rail's netdev (`ports/<n>/gids`, `gid_attrs/types`, `gid_attrs/ndevs`): without one, RoCE v2 traffic cannot be sourced from the rail's routed address.",
			Remedy: "the kernel adds the GID when the address is on the netdev and the RDMA device is bound to it: check ROCE-ADDR-001, `rdma link show` (the netdev of the port), and that RoCE v2 is enabled in the NIC (mlxconfig ROCE_CONTROL / `devlink dev param show ... enable_roce`)",
			Run:    checkRailGIDs,
		},
		Check{
			ID: "ROCE-GID-002", Title: "GID index NCCL selects",
			Doc:    "Simulates NCCL's GID selection (NCCL 2.21 and later: NCCL_IB_GID_INDEX if set, else the first RoCE v2 GID of NCCL_IB_ADDR_FAMILY within NCCL_IB_ADDR_RANGE, as in the agent's nccl.env) on each rail NIC and checks it lands on the rail's address: a second address on a rail, or no IPv4 GID, makes NCCL use another source address or the link-local GID, and the job hangs or crawls.",
			Remedy: "source the agent's nccl.env (state_dir/nccl.env) in the job; remove stray addresses from the rail netdev; set NCCL_IB_GID_INDEX to the rail's GID index (roce-agent inventory lists it)",
			Run:    checkNCCLGID,
		},
		Check{
			ID: "ROCE-MTU-002", Title: "RoCE active MTU",
			Doc:    "The RoCE path MTU of each rail port (ibv_devinfo's active_mtu; derived from the netdev MTU minus RoCE headers when ibv_devinfo is missing) should be 4096, the largest RoCE supports: a netdev MTU below 4184 makes RoCE run 1024- or 2048-byte packets.",
			Remedy: "set the rail netdev MTU to 9000 (ROCE-MTU-001) and the leaf port's to match; check `ibv_devinfo -d <dev> -i <port>` afterwards",
			Run:    checkActiveMTU,
		},
	)
}

// railAddrs are the host addresses of a rail to find GIDs for: the
// desired ones, else (no desired state) none.
func railAddrs(d *agent.Diagnosis, rail int) []netip.Addr {
	if d == nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range d.Desired {
		if r.Rail != rail {
			continue
		}
		for _, p := range []netip.Prefix{r.IPv4, r.IPv6} {
			if p.IsValid() {
				out = append(out, p.Addr())
			}
		}
	}
	return out
}

// desiredRailAddrs maps each rail to its desired addresses: from the
// node's diagnosis on the live host, else (a fixture tree) from the
// config's explicit addresses.
func desiredRailAddrs(e *Env) (map[int][]netip.Addr, []Result) {
	if !e.Desired {
		_, rs := desiredView(e)
		return nil, rs
	}
	out := map[int][]netip.Addr{}
	if d, err := e.Diagnosis(); err == nil {
		for _, r := range d.Desired {
			out[r.Rail] = railAddrs(d, r.Rail)
		}
		return out, nil
	} else if !errors.Is(err, errNoKernel) {
		return nil, []Result{UnknownResult("node", fmt.Sprintf("the desired rails could not be derived: %v", err))}
	}
	for _, rc := range e.Config.Rails {
		if rc.Rail == nil {
			continue
		}
		for _, s := range []string{rc.IPv4, rc.IPv6} {
			if p, err := netip.ParsePrefix(s); err == nil {
				out[*rc.Rail] = append(out[*rc.Rail], p.Addr())
			}
		}
	}
	return out, nil
}

func checkRailGIDs(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	addrs, rs := desiredRailAddrs(e)
	if rs != nil {
		return rs
	}
	var out []Result
	for _, r := range rails {
		subject := railSubject(r.Netdev, r.RDMADevice)
		n := e.RailNIC(r)
		want := addrs[r.Rail]
		switch {
		case n == nil || r.RDMADevice == "":
			out = append(out, SkipResult(subject, "the rail has no RDMA device").OnRail(r.Rail))
			continue
		case len(want) == 0:
			out = append(out, SkipResult(subject, "the rail has no desired address").OnRail(r.Rail))
			continue
		}
		var found, missing []string
		var unreadable error
		for _, a := range want {
			i, err := e.FS.GIDIndex(n.RDMADevice, n.Port.Port, a, r.Netdev)
			switch {
			case errors.Is(err, nic.ErrGIDNotFound):
				missing = append(missing, a.String())
			case err != nil:
				unreadable = err
			default:
				found = append(found, fmt.Sprintf("%s at index %d", a, i))
			}
		}
		switch {
		case len(missing) > 0:
			out = append(out, FailResult(subject, noneIfEmpty(strings.Join(found, ", ")), "a RoCE v2 GID for "+strings.Join(addrStrings(want), " and "),
				fmt.Sprintf("%s port %d has no RoCE v2 GID on %s for %s", n.RDMADevice, n.Port.Port, r.Netdev, strings.Join(missing, ", "))).OnRail(r.Rail))
		case unreadable != nil:
			out = append(out, UnknownResult(subject, unreadable.Error()).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, strings.Join(found, ", ")).OnRail(r.Rail))
		}
	}
	return out
}

func noneIfEmpty(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// ncclSettings are the GID selection variables of the agent's nccl.env
// hand-off (the defaults without one).
type ncclSettings struct {
	gidIndex int // -1 unset
	family   string
	rng      netip.Prefix
	source   string
}

func readNCCLEnv(e *Env) ncclSettings {
	s := ncclSettings{gidIndex: -1, family: "AF_INET", source: "NCCL's defaults (no " + agent.NCCLEnvFile + " in state_dir)"}
	p := filepath.Join(e.Config.StateDir, agent.NCCLEnvFile)
	data, err := agent.ReadRegularFile(p, 64<<10)
	if err != nil {
		return s
	}
	s.source = p
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "NCCL_IB_GID_INDEX":
			if i, err := strconv.Atoi(v); err == nil {
				s.gidIndex = i
			}
		case "NCCL_IB_ADDR_FAMILY":
			s.family = v
		case "NCCL_IB_ADDR_RANGE":
			if p, err := netip.ParsePrefix(v); err == nil {
				s.rng = p
			}
		}
	}
	return s
}

// ncclPick is NCCL's ncclIbGetGidIndex over a port's GID table: start at
// index 0 and let each later entry replace the pick when it is of the
// wanted family (and range) and the pick is not, or when both are and
// the entry has the wanted RoCE version and the pick has another.
func ncclPick(gids []nic.GID, family string, rng netip.Prefix) (nic.GID, bool) {
	sorted := append([]nic.GID(nil), gids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Index < sorted[j].Index })
	byIndex := map[int]nic.GID{}
	for _, g := range sorted {
		byIndex[g.Index] = g
	}
	fam := func(g nic.GID) string {
		a, err := netip.ParseAddr(g.IP)
		if err == nil && a.Unmap().Is4() {
			return "AF_INET"
		}
		return "AF_INET6"
	}
	valid := func(g nic.GID) bool { return g.IP != "" && g.IP != "::" }
	inRange := func(g nic.GID) bool {
		if !rng.IsValid() {
			return true
		}
		a, err := netip.ParseAddr(g.IP)
		return err == nil && rng.Contains(a.Unmap())
	}
	pick := byIndex[0] // the zero GID when index 0 is empty
	for _, c := range sorted {
		if c.Index == 0 {
			continue
		}
		if fam(c) != fam(pick) && fam(c) == family && inRange(c) {
			pick = c
			continue
		}
		if fam(c) != family || !valid(c) || !inRange(c) {
			continue
		}
		if (c.Type != pick.Type || !valid(pick)) && c.IsRoCEv2() {
			pick = c
		}
	}
	ok := valid(pick) && fam(pick) == family && pick.IsRoCEv2() && inRange(pick)
	return pick, ok
}

func checkNCCLGID(_ context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	settings := readNCCLEnv(e)
	addrs, _ := desiredRailAddrs(e)
	var out []Result
	for _, r := range rails {
		subject := railSubject(r.Netdev, r.RDMADevice)
		n := e.RailNIC(r)
		if n == nil || r.RDMADevice == "" {
			out = append(out, SkipResult(subject, "the rail has no RDMA device").OnRail(r.Rail))
			continue
		}
		var want netip.Addr
		for _, a := range addrs[r.Rail] {
			if (settings.family == "AF_INET") == a.Is4() {
				want = a
			}
		}
		var pick nic.GID
		ok := false
		how := "NCCL_IB_GID_INDEX=" + strconv.Itoa(settings.gidIndex)
		if settings.gidIndex >= 0 {
			for _, g := range n.Port.GIDs {
				if g.Index == settings.gidIndex {
					pick, ok = g, g.IsRoCEv2()
				}
			}
		} else {
			pick, ok = ncclPick(n.Port.GIDs, settings.family, settings.rng)
			how = "NCCL_IB_ADDR_FAMILY=" + settings.family
			if settings.rng.IsValid() {
				how += " NCCL_IB_ADDR_RANGE=" + settings.rng.String()
			}
		}
		observed := fmt.Sprintf("index %d (%s, %s)", pick.Index, noneIfEmpty(pick.IP), noneIfEmpty(pick.Type))
		expected := "a RoCE v2 GID of " + settings.family
		if want.IsValid() {
			expected = "the RoCE v2 GID of " + want.String()
		}
		pickAddr, _ := netip.ParseAddr(pick.IP)
		switch {
		case !ok:
			out = append(out, FailResult(subject, observed, expected,
				fmt.Sprintf("with %s (from %s) NCCL would not use a RoCE v2 GID of the rail on %s", how, settings.source, n.RDMADevice)).OnRail(r.Rail))
		case want.IsValid() && pickAddr.Unmap() != want:
			out = append(out, FailResult(subject, observed, expected,
				fmt.Sprintf("with %s (from %s) NCCL would source RoCE traffic from %s, not the rail's %s", how, settings.source, pick.IP, want)).OnRail(r.Rail))
		case pick.Netdev != "" && r.Netdev != "" && pick.Netdev != r.Netdev:
			out = append(out, FailResult(subject, observed, expected,
				fmt.Sprintf("the GID NCCL would use belongs to %s, not the rail's %s", pick.Netdev, r.Netdev)).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, observed).OnRail(r.Rail).With("%s, from %s", how, settings.source))
		}
	}
	return out
}

// ibMTUs are the RoCE path MTUs, largest first.
var ibMTUs = []int{4096, 2048, 1024, 512, 256}

// roceHeaders is what the kernel subtracts from the netdev MTU to get the
// RoCE MTU (iboe_get_mtu: GRH, BTH, the largest extended header, ICRC).
const roceHeaders = 88

// derivedActiveMTU is the RoCE MTU a netdev MTU allows.
func derivedActiveMTU(netdevMTU int) int {
	for _, m := range ibMTUs {
		if netdevMTU-roceHeaders >= m {
			return m
		}
	}
	return 0
}

// parseActiveMTU reads "active_mtu: 4096 (5)" from ibv_devinfo's output.
func parseActiveMTU(out string) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || k != "active_mtu" {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 256 || n > 4096 {
			return 0, fmt.Errorf("active_mtu %q is not a RoCE MTU", strings.TrimSpace(v))
		}
		return n, nil
	}
	return 0, errors.New("no active_mtu line")
}

func checkActiveMTU(ctx context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	var out []Result
	for _, r := range rails {
		subject := railSubject(r.Netdev, r.RDMADevice)
		n := e.RailNIC(r)
		if n == nil || r.RDMADevice == "" {
			out = append(out, SkipResult(subject, "the rail has no RDMA device").OnRail(r.Rail))
			continue
		}
		active, source := 0, ""
		if e.Live {
			res, err := e.RunTool(ctx, 5*time.Second, "ibv_devinfo", "-d", n.RDMADevice, "-i", strconv.Itoa(n.Port.Port))
			switch {
			case errors.Is(err, probe.ErrToolMissing):
				source = "ibv_devinfo is not installed: derived from the netdev MTU"
			case err != nil:
				source = fmt.Sprintf("ibv_devinfo failed (%v): derived from the netdev MTU", err)
			case res.TimedOut:
				source = "ibv_devinfo did not answer within 5s: derived from the netdev MTU"
			case res.ExitCode != 0:
				source = fmt.Sprintf("ibv_devinfo exited %d (%s): derived from the netdev MTU", res.ExitCode, stderrLine(res.Stderr))
			default:
				a, err := parseActiveMTU(res.Stdout)
				if err != nil {
					source = fmt.Sprintf("ibv_devinfo's output: %v: derived from the netdev MTU", err)
				} else {
					active, source = a, "ibv_devinfo"
				}
			}
		} else {
			source = "a sysfs tree: derived from the netdev MTU"
		}
		if active == 0 {
			if n.MTU <= 0 {
				out = append(out, UnknownResult(subject, source+", which is unreadable").OnRail(r.Rail))
				continue
			}
			active = derivedActiveMTU(n.MTU)
		}
		observed := fmt.Sprintf("%d (netdev MTU %d)", active, n.MTU)
		switch {
		case active >= 4096:
			out = append(out, PassResult(subject, observed).OnRail(r.Rail).With("from %s", source))
		case n.MTU >= 4096+roceHeaders:
			out = append(out, FailResult(subject, observed, "4096", fmt.Sprintf("RoCE runs %d-byte packets although the netdev MTU allows 4096 (from %s)", active, source)).OnRail(r.Rail))
		default:
			out = append(out, WarnResult(subject, observed, "4096", fmt.Sprintf("RoCE runs %d-byte packets: the netdev MTU %d is below %d (from %s)", active, n.MTU, 4096+roceHeaders, source)).OnRail(r.Rail))
		}
	}
	return out
}

func stderrLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
