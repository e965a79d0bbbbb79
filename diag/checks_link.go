package diag

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/roce-agent/roce-agent/agent"
	"github.com/roce-agent/roce-agent/nic/linkengine"
)

// Link checks: the rails' netdevs, addresses, MTU, source routing and
// sysctls against the desired state, read through the agent's own
// planner (the changes `roce-agent plan` would print are the faults).

func init() {
	register(
		Check{
			ID: "NET-LINK-001", Title: "rail netdev present and up",
			Doc:    "Each desired rail's netdev must exist in the rails' network namespace and be administratively up (netlink link dump).",
			Remedy: "`roce-agent apply` (or let the daemon run) brings the netdev up; a missing netdev means the driver did not load or the NIC was renamed: check `ip -br link`, `dmesg | grep mlx5` and the rail pins in the config",
			Run:    checkLinkUp,
		},
		Check{
			ID: "ROCE-ADDR-001", Title: "rail addresses present",
			Doc:    "Each desired rail's /31 IPv4 and /127 IPv6 host addresses must be on its netdev, and no foreign address may overlap them (the RoCE GIDs and the source rules derive from these addresses).",
			Remedy: "`roce-agent apply` adds missing addresses; a foreign overlapping address (from NetworkManager, cloud-init, netplan) must be removed by whoever added it: roce-agent never removes what it does not own",
			Run:    checkAddresses,
		},
		Check{
			ID: "ROCE-MTU-001", Title: "rail netdev MTU",
			Doc:    "Each desired rail's netdev must have the configured MTU (9000 by default), within the NIC's maximum; RoCE's packet size (the active MTU) follows from it.",
			Remedy: "`roce-agent apply` sets it; if the NIC's maximum is lower, the NIC or its firmware cannot carry jumbo frames: check `ip -d link show <netdev>` (maxmtu) and the firmware; the leaf port needs the same MTU (plus headers)",
			Run:    checkMTU,
		},
		Check{
			ID: "NET-ROUTE-001", Title: "per-rail source rule and routes",
			Doc:    "Each desired rail must have its source rule (from the rail's address to the rail's table) and its routes (the leaf and the tenant prefixes through the leaf) in its own table, and no stale rule or route the agent owns.",
			Remedy: "`roce-agent apply` converges them; a foreign rule at the rail's priority or a foreign route in the rail's table is named in the reason and must be removed by its owner; see `ip rule` and `ip route show table <table>`",
			Run:    checkRouting,
		},
		Check{
			ID: "NET-SYSCTL-001", Title: "rail sysctls",
			Doc:    "Each desired rail needs arp_ignore=1 and arp_announce=2 (ARP only for the rail's own address, sourced from it), rp_filter=2 (loose: replies may come back on another rail) and, with IPv6, keep_addr_on_down=1 and accept_ra as configured. The effective rp_filter, arp_ignore and arp_announce are the larger of the interface's and `all`'s. Without a desired state the inventory's rails are compared with this policy: strict rp_filter (1) fails, other differences warn.",
			Remedy: "`roce-agent apply` sets the interface values; a larger value under net.ipv4.conf.all (from sysctl.d or a hardening profile) overrides them: lower it there",
			Run:    checkSysctls,
		},
	)
}

// desiredView returns the diagnosis when the host can be compared with a
// desired state; otherwise the results that say why not.
func desiredView(e *Env) (*agent.Diagnosis, []Result) {
	if !e.Desired {
		why := "no desired state: the config has no rails"
		if e.ConfigErr != nil {
			why = fmt.Sprintf("no desired state: the config could not be used: %v", e.ConfigErr)
		} else if e.Config.Controller.URL != "" {
			why = "no desired state: controller mode and no last good controller config in state_dir"
		}
		return nil, []Result{SkipResult("node", why)}
	}
	d, err := e.Diagnosis()
	if err != nil {
		if err == errNoKernel {
			return nil, []Result{SkipResult("node", err.Error())}
		}
		return nil, []Result{UnknownResult("node", fmt.Sprintf("cannot compare the host with the desired state: %v", err))}
	}
	if len(d.Desired) == 0 {
		return nil, []Result{SkipResult("node", "no desired rail on this host")}
	}
	return d, nil
}

// linkView is desiredView for the link checks: a link plan must exist.
func linkView(e *Env) (*agent.Diagnosis, []Result) {
	d, rs := desiredView(e)
	if rs != nil {
		return nil, rs
	}
	if d.LinkErr != nil {
		return nil, []Result{UnknownResult("node", fmt.Sprintf("the link plan failed: %v", d.LinkErr))}
	}
	return d, nil
}

func changesOf(d *agent.Diagnosis, rail int, kinds ...linkengine.ChangeKind) []linkengine.Change {
	var out []linkengine.Change
	for _, c := range d.Link.Changes {
		if c.Rail != rail {
			continue
		}
		for _, k := range kinds {
			if c.Kind == k {
				out = append(out, c)
			}
		}
	}
	return out
}

func conflictsOf(d *agent.Diagnosis, rail int, prefixes ...string) []linkengine.Conflict {
	var out []linkengine.Conflict
	for _, c := range d.Link.Conflicts {
		if c.Rail != rail {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(c.Object, p) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

func commands(cs []linkengine.Change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Command
	}
	return strings.Join(parts, "; ")
}

func reasons(cs []linkengine.Conflict) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Reason
	}
	return strings.Join(parts, "; ")
}

// missingNetdev is the result of a rail whose netdev is not there: the
// other link checks skip it, NET-LINK-001 fails it.
func missingNetdev(d *agent.Diagnosis, r linkengine.RailLink) (Result, bool) {
	if _, ok := d.Live.Links[r.Netdev]; ok && r.Netdev != "" {
		return Result{}, false
	}
	return SkipResult(railSubject(r.Netdev, ""), "the rail's netdev is missing (NET-LINK-001)").OnRail(r.Rail), true
}

func checkLinkUp(_ context.Context, e *Env) []Result {
	d, rs := linkView(e)
	if rs != nil {
		return rs
	}
	var out []Result
	for _, r := range d.Desired {
		subject := railSubject(r.Netdev, "")
		link, ok := d.Live.Links[r.Netdev]
		switch {
		case !ok || r.Netdev == "":
			out = append(out, FailResult(subject, "absent", "present and up", reasons(conflictsOf(d, r.Rail, "netdev"))).OnRail(r.Rail))
		case !link.Up:
			out = append(out, FailResult(subject, "down", "up", fmt.Sprintf("%s is administratively down", r.Netdev)).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, "up").OnRail(r.Rail))
		}
	}
	return out
}

// eachPresentRail runs judge on every desired rail whose netdev is there
// (the others SKIP: NET-LINK-001 fails them) and puts each result on its
// rail.
func eachPresentRail(e *Env, judge func(d *agent.Diagnosis, r linkengine.RailLink, subject string) Result) []Result {
	d, rs := linkView(e)
	if rs != nil {
		return rs
	}
	var out []Result
	for _, r := range d.Desired {
		if res, missing := missingNetdev(d, r); missing {
			out = append(out, res)
			continue
		}
		out = append(out, judge(d, r, railSubject(r.Netdev, "")).OnRail(r.Rail))
	}
	return out
}

func checkAddresses(_ context.Context, e *Env) []Result {
	return eachPresentRail(e, func(d *agent.Diagnosis, r linkengine.RailLink, subject string) Result {
		var want []string
		for _, p := range []netip.Prefix{r.IPv4, r.IPv6} {
			if p.IsValid() {
				want = append(want, p.String())
			}
		}
		have := d.Live.Links[r.Netdev].Addrs
		var haveS []string
		for _, p := range have {
			if !p.Addr().IsLinkLocalUnicast() {
				haveS = append(haveS, p.String())
			}
		}
		observed := strings.Join(haveS, " ")
		if observed == "" {
			observed = "none"
		}
		adds, conflicts := changesOf(d, r.Rail, linkengine.AddrAdd), conflictsOf(d, r.Rail, "address")
		switch {
		case len(conflicts) > 0:
			return FailResult(subject, observed, strings.Join(want, " "), reasons(conflicts))
		case len(adds) > 0:
			return FailResult(subject, observed, strings.Join(want, " "), "missing: "+commands(adds))
		case len(want) == 0:
			return SkipResult(subject, "the rail has no address in the desired state")
		default:
			return PassResult(subject, strings.Join(want, " "))
		}
	})
}

func checkMTU(_ context.Context, e *Env) []Result {
	return eachPresentRail(e, func(d *agent.Diagnosis, r linkengine.RailLink, subject string) Result {
		link := d.Live.Links[r.Netdev]
		observed, expected := fmt.Sprint(link.MTU), fmt.Sprint(r.MTU)
		switch {
		case r.MTU == 0:
			return SkipResult(subject, "the desired state sets no MTU")
		case link.MaxMTU > 0 && link.MaxMTU < r.MTU:
			return FailResult(subject, observed, expected, fmt.Sprintf("the NIC's maximum MTU is %d, below the configured %d", link.MaxMTU, r.MTU))
		case link.MTU != r.MTU:
			return FailResult(subject, observed, expected, fmt.Sprintf("%s has MTU %d", r.Netdev, link.MTU))
		default:
			return PassResult(subject, observed)
		}
	})
}

func checkRouting(_ context.Context, e *Env) []Result {
	d, rs := linkView(e)
	if rs != nil {
		return rs
	}
	var out []Result
	for _, r := range d.Desired {
		if res, missing := missingNetdev(d, r); missing {
			out = append(out, res)
			continue
		}
		subject := railSubject(r.Netdev, "")
		expected := fmt.Sprintf("rule %d from the rail's addresses lookup %d; %d routes in table %d", r.RulePriority, r.Table, len(r.Routes), r.Table)
		changes := changesOf(d, r.Rail, linkengine.RuleAdd, linkengine.RouteSet, linkengine.RouteDel, linkengine.RuleDel)
		conflicts := conflictsOf(d, r.Rail, "rule", "route", "an owned rule")
		switch {
		case len(conflicts) > 0:
			out = append(out, FailResult(subject, fmt.Sprintf("%d conflicts", len(conflicts)), expected, reasons(conflicts)).OnRail(r.Rail))
		case len(changes) > 0:
			out = append(out, FailResult(subject, fmt.Sprintf("%d rules or routes differ", len(changes)), expected, "apply would run: "+commands(changes)).OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, expected).OnRail(r.Rail))
		}
	}
	// Conflicts of no rail (an owned rule held by a foreign one) fail the
	// node.
	if cs := conflictsOf(d, -1, ""); len(cs) > 0 {
		out = append(out, FailResult("node", fmt.Sprintf("%d conflicts", len(cs)), "none", reasons(cs)))
	}
	return out
}

// maxWins are the IPv4 conf sysctls whose effective value is the larger
// of the interface's and net.ipv4.conf.all's.
var maxWins = map[string]bool{"arp_ignore": true, "arp_announce": true, "rp_filter": true}

func checkSysctls(_ context.Context, e *Env) []Result {
	if !e.Desired && e.Live && len(e.Rails()) > 0 {
		return sysctlsWithoutDesired(e)
	}
	return eachPresentRail(e, func(d *agent.Diagnosis, r linkengine.RailLink, subject string) Result {
		want := r.Sysctls()
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var bad, good []string
		for _, k := range keys {
			name := k[strings.LastIndexByte(k, '/')+1:]
			have := d.Live.Sysctls[k]
			if have == "" {
				bad = append(bad, fmt.Sprintf("%s unreadable (want %s)", dotted(k), want[k]))
				continue
			}
			if have != want[k] {
				bad = append(bad, fmt.Sprintf("%s=%s (want %s)", dotted(k), have, want[k]))
				continue
			}
			if maxWins[name] && strings.HasPrefix(k, "net/ipv4/conf/") {
				if all, err := e.ReadProc("sys/net/ipv4/conf/all/" + name); err == nil && all > want[k] && len(all) == len(want[k]) {
					bad = append(bad, fmt.Sprintf("%s=%s overrides %s=%s", "net.ipv4.conf.all."+name, all, dotted(k), have))
					continue
				}
			}
			good = append(good, fmt.Sprintf("%s=%s", name, have))
		}
		if len(bad) > 0 {
			return FailResult(subject, strings.Join(bad, ", "), "arp_ignore=1 arp_announce=2 rp_filter=2 (and keep_addr_on_down=1 with IPv6)", "the rail's sysctls differ: "+strings.Join(bad, "; "))
		}
		return PassResult(subject, strings.Join(good, " "))
	})
}

// dotted renders a /proc/sys path as sysctl(8) names it.
func dotted(p string) string {
	parts := strings.Split(p, "/")
	return strings.Join(parts, ".")
}

// railPolicy is what roce-agent sets on a rail, for hosts diag compares
// without a desired state.
var railPolicy = []struct{ key, want string }{
	{"net/ipv4/conf/%s/arp_ignore", "1"},
	{"net/ipv4/conf/%s/arp_announce", "2"},
	{"net/ipv4/conf/%s/rp_filter", "2"},
	{"net/ipv6/conf/%s/keep_addr_on_down", "1"},
}

// sysctlsWithoutDesired compares the inventory's rails with roce-agent's
// rail policy when there is no desired state: a host configured by other
// tools still gets the check, as a warning (nothing says what is wanted).
// Strict reverse-path filtering is a failure: replies that come back on
// another rail are dropped.
func sysctlsWithoutDesired(e *Env) []Result {
	var out []Result
	for _, r := range e.Rails() {
		if r.Netdev == "" {
			continue
		}
		subject := railSubject(r.Netdev, r.RDMADevice)
		var bad, good []string
		strict := false
		for _, p := range railPolicy {
			k := fmt.Sprintf(p.key, r.Netdev)
			have, err := e.ReadProc("sys/" + k)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s unreadable (%v)", dotted(k), err))
				continue
			}
			name := k[strings.LastIndexByte(k, '/')+1:]
			if maxWins[name] {
				if all, err := e.ReadProc("sys/net/ipv4/conf/all/" + name); err == nil && len(all) == len(have) && all > have {
					have = all
				}
			}
			if name == "rp_filter" && have == "1" {
				strict = true
			}
			if have != p.want {
				bad = append(bad, fmt.Sprintf("%s=%s (want %s)", dotted(k), have, p.want))
				continue
			}
			good = append(good, name+"="+have)
		}
		switch {
		case strict:
			out = append(out, FailResult(subject, strings.Join(bad, ", "), "rp_filter=2 (loose)", "strict reverse-path filtering drops replies that come back on another rail (no desired state: compared with roce-agent's rail policy)").OnRail(r.Rail))
		case len(bad) > 0:
			out = append(out, WarnResult(subject, strings.Join(bad, ", "), "arp_ignore=1 arp_announce=2 rp_filter=2 keep_addr_on_down=1", "no desired state: compared with roce-agent's rail policy").OnRail(r.Rail))
		default:
			out = append(out, PassResult(subject, strings.Join(good, " ")).OnRail(r.Rail).With("no desired state: compared with roce-agent's rail policy"))
		}
	}
	if len(out) == 0 {
		return noRails(e)
	}
	return out
}
