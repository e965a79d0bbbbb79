package linkengine

import (
	"net/netip"
	"strings"
	"testing"
)

var tr = TableRange{TableBase: 1000, PriorityBase: 1000, Size: 256}

func rail(n int, netdev, v4, v6 string, routes ...string) RailLink {
	r := RailLink{Rail: n, Netdev: netdev, MTU: 9000, Table: 1000 + n, RulePriority: 1000 + n}
	if v4 != "" {
		r.IPv4 = netip.MustParsePrefix(v4)
		r.IPv4Leaf = PeerAddr(r.IPv4)
	}
	if v6 != "" {
		r.IPv6 = netip.MustParsePrefix(v6)
		r.IPv6Leaf = PeerAddr(r.IPv6)
	}
	for _, p := range routes {
		r.Routes = append(r.Routes, netip.MustParsePrefix(p))
	}
	return r
}

// converged returns the live state that PlanLinks would leave.
func converged(rails ...RailLink) LiveState {
	live := LiveState{Links: map[string]Link{}, Sysctls: map[string]string{}}
	for i, r := range rails {
		l := Link{Name: r.Netdev, Index: 10 + i, Up: true, MTU: r.MTU, MaxMTU: 9978}
		for _, a := range []netip.Prefix{r.IPv4, r.IPv6} {
			if a.IsValid() {
				l.Addrs = append(l.Addrs, a)
			}
		}
		live.Links[r.Netdev] = l
		for k, v := range r.Sysctls() {
			live.Sysctls[k] = v
		}
		live.Rules = append(live.Rules, r.rules()...)
		live.Routes = append(live.Routes, r.routes()...)
	}
	return live
}

func fresh(rails ...RailLink) LiveState {
	live := LiveState{Links: map[string]Link{}, Sysctls: map[string]string{}}
	for i, r := range rails {
		live.Links[r.Netdev] = Link{Name: r.Netdev, Index: 10 + i, MTU: 1500, MaxMTU: 9978}
		for k := range r.Sysctls() {
			live.Sysctls[k] = "0"
			if strings.HasSuffix(k, "/accept_ra") {
				live.Sysctls[k] = "1" // the kernel's defaults
			}
		}
	}
	return live
}

func transcript(p LinkPlan) string {
	var b strings.Builder
	for _, c := range p.Conflicts {
		b.WriteString("conflict " + c.String() + "\n")
	}
	for _, c := range p.Changes {
		b.WriteString(c.Command + "\n")
	}
	return b.String()
}

func ownedOf(netdev string, addrs ...string) Owned {
	o := Owned{Addrs: map[string][]netip.Prefix{}}
	for _, a := range addrs {
		o.Addrs[netdev] = append(o.Addrs[netdev], netip.MustParsePrefix(a))
	}
	return o
}

func TestPlanLinks(t *testing.T) {
	r0 := rail(0, "eth0", "10.0.0.1/31", "fc00:0:0:1::1/127", "10.0.0.0/8", "fc00::/16")
	r1 := rail(1, "eth1", "10.0.1.1/31", "")
	for _, tc := range []struct {
		name  string
		rails []RailLink
		live  LiveState
		owned Owned
		want  string
	}{
		{
			name: "from clean, dependency order", rails: []RailLink{r0}, live: fresh(r0),
			want: `ip link set dev eth0 up
ip link set dev eth0 mtu 9000
sysctl -w net.ipv4.conf.eth0.arp_announce=2
sysctl -w net.ipv4.conf.eth0.arp_ignore=1
sysctl -w net.ipv4.conf.eth0.rp_filter=2
sysctl -w net.ipv6.conf.eth0.accept_ra=0
sysctl -w net.ipv6.conf.eth0.keep_addr_on_down=1
ip address add 10.0.0.1/31 dev eth0
ip -6 address add fc00:0:0:1::1/127 dev eth0 nodad
ip rule add from 10.0.0.1 lookup 1000 priority 1000 protocol 171
ip -6 rule add from fc00:0:0:1::1 lookup 1000 priority 1000 protocol 171
ip route replace 10.0.0.0/31 dev eth0 table 1000 proto 171 scope link src 10.0.0.1
ip -6 route replace fc00:0:0:1::/127 dev eth0 table 1000 proto 171 scope link src fc00:0:0:1::1
ip route replace 10.0.0.0/8 via 10.0.0.0 dev eth0 table 1000 proto 171
ip -6 route replace fc00::/16 via fc00:0:0:1:: dev eth0 table 1000 proto 171
`,
		},
		{name: "converged: nothing", rails: []RailLink{r0, r1}, live: converged(r0, r1), want: ""},
		{
			name: "drift: MTU, link down, address gone", rails: []RailLink{r0},
			live: func() LiveState {
				l := converged(r0)
				link := l.Links["eth0"]
				link.MTU, link.Up, link.Addrs = 1500, false, link.Addrs[1:]
				l.Links["eth0"] = link
				return l
			}(),
			owned: ownedOf("eth0", "10.0.0.1/31", "fc00:0:0:1::1/127"),
			want: `ip link set dev eth0 up
ip link set dev eth0 mtu 9000
ip address add 10.0.0.1/31 dev eth0
`,
		},
		{
			name: "foreign state on a managed netdev is left alone", rails: []RailLink{r1},
			live: func() LiveState {
				l := converged(r1)
				link := l.Links["eth1"]
				link.Addrs = append(link.Addrs, netip.MustParsePrefix("192.168.7.5/24"))
				l.Links["eth1"] = link
				l.Routes = append(l.Routes, Route{Table: 1001, Dst: netip.MustParsePrefix("10.0.0.0/8"), Gw: netip.MustParseAddr("10.0.1.0"), Dev: "eth1", Protocol: 4})
				l.Rules = append(l.Rules, Rule{Priority: 500, Src: netip.MustParsePrefix("10.0.1.1/32"), Table: 77, Protocol: 4})
				return l
			}(),
			// The route in table 1001 has the agent's key but a foreign protocol:
			// CheckLive rejects that; the planner never deletes it.
			want: "",
		},
		{
			name: "foreign address in the /31 is a conflict for that rail only", rails: []RailLink{r0, r1},
			live: func() LiveState {
				l := fresh(r0, r1)
				link := l.Links["eth1"]
				link.Addrs = []netip.Prefix{netip.MustParsePrefix("10.0.1.0/31")}
				l.Links["eth1"] = link
				return l
			}(),
			// The rail's address, rule and routes wait; its link settings are
			// still made, and so is every other rail.
			want: "conflict rail 1 (eth1): address 10.0.1.1/31 on eth1 not added: foreign address 10.0.1.0/31 on eth1 overlaps the rail's 10.0.1.0/31 (it is not marked protocol 171 nor in the ownership record); the rail's IPv4 rule and routes wait for it\n" +
				strings.Join(PlanLinks([]RailLink{r0}, fresh(r0), Owned{}, tr).Commands(), "\n") + "\n" +
				`ip link set dev eth1 up
ip link set dev eth1 mtu 9000
sysctl -w net.ipv4.conf.eth1.arp_announce=2
sysctl -w net.ipv4.conf.eth1.arp_ignore=1
sysctl -w net.ipv4.conf.eth1.rp_filter=2
`,
		},
		{
			name: "a foreign IPv4 address holds back IPv4 only", rails: []RailLink{r0},
			live: func() LiveState {
				l := converged(r0)
				link := l.Links["eth0"]
				link.Addrs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/31"), r0.IPv6}
				l.Links["eth0"] = link
				l.Rules = l.Rules[1:] // the IPv6 rule is there, the IPv4 one not
				l.Routes = nil
				return l
			}(),
			want: "conflict rail 0 (eth0): address 10.0.0.1/31 on eth0 not added: foreign address 10.0.0.0/31 on eth0 overlaps the rail's 10.0.0.0/31 (it is not marked protocol 171 nor in the ownership record); the rail's IPv4 rule and routes wait for it\n" +
				`ip -6 route replace fc00:0:0:1::/127 dev eth0 table 1000 proto 171 scope link src fc00:0:0:1::1
ip -6 route replace fc00::/16 via fc00:0:0:1:: dev eth0 table 1000 proto 171
`,
		},
		{
			name: "a foreign address next to the rail's own: held, nothing removed or added", rails: []RailLink{r1},
			live: func() LiveState {
				l := converged(r1)
				link := l.Links["eth1"]
				link.Addrs = append(link.Addrs, netip.MustParsePrefix("10.0.1.0/31"))
				l.Links["eth1"] = link
				return l
			}(),
			want: "conflict rail 1 (eth1): address 10.0.1.1/31 on eth1 held: foreign address 10.0.1.0/31 on eth1 overlaps the rail's 10.0.1.0/31 (it is not marked protocol 171 nor in the ownership record); the rail's IPv4 rule and routes are left as they are until it is gone\n",
		},
		{
			name: "missing netdev is a conflict", rails: []RailLink{rail(2, "eth9", "10.0.2.1/31", "")},
			live: LiveState{Links: map[string]Link{}}, want: "conflict rail 2 (eth9): netdev eth9 does not exist in the rails' network namespace\n",
		},
		{
			name: "readdressing: make before break", rails: []RailLink{rail(1, "eth1", "10.0.9.1/31", "")},
			live:  converged(r1),
			owned: ownedOf("eth1", "10.0.1.1/31"),
			want: `ip address add 10.0.9.1/31 dev eth1
ip rule add from 10.0.9.1 lookup 1001 priority 1001 protocol 171
ip route replace 10.0.9.0/31 dev eth1 table 1001 proto 171 scope link src 10.0.9.1
ip route del 10.0.1.0/31 dev eth1 table 1001 proto 171 scope link src 10.0.1.1
ip rule del from 10.0.1.1 lookup 1001 priority 1001 protocol 171
ip address del 10.0.1.1/31 dev eth1
`,
		},
		{
			name: "a rail removed from the config: owned state goes, foreign stays", rails: []RailLink{r0},
			live:  converged(r0, r1),
			owned: ownedOf("eth1", "10.0.1.1/31"),
			want: `ip route del 10.0.1.0/31 dev eth1 table 1001 proto 171 scope link src 10.0.1.1
ip rule del from 10.0.1.1 lookup 1001 priority 1001 protocol 171
ip address del 10.0.1.1/31 dev eth1
`,
		},
		{
			name: "ownership from the kernel alone: an address marked protocol 171 goes with its rail", rails: []RailLink{r0},
			live: func() LiveState {
				l := converged(r0, r1)
				link := l.Links["eth1"]
				link.MarkedAddrs = []netip.Prefix{r1.IPv4}
				l.Links["eth1"] = link
				return l
			}(),
			want: `ip route del 10.0.1.0/31 dev eth1 table 1001 proto 171 scope link src 10.0.1.1
ip rule del from 10.0.1.1 lookup 1001 priority 1001 protocol 171
ip address del 10.0.1.1/31 dev eth1
`,
		},
		{
			name: "a rail re-pinned to a netdev that is missing keeps what it has", rails: []RailLink{r0, rail(1, "eth9", "10.0.1.1/31", "")},
			live: func() LiveState {
				l := converged(r0, r1)
				link := l.Links["eth1"]
				link.MarkedAddrs = []netip.Prefix{r1.IPv4}
				l.Links["eth1"] = link
				return l
			}(),
			want: "conflict rail 1 (eth9): netdev eth9 does not exist in the rails' network namespace\n",
		},
		{
			name: "an owned rule shadowed by a foreign look-alike is not deleted", rails: []RailLink{r0},
			live: func() LiveState {
				l := converged(r0, r1)
				// The foreign rule comes first: a delete of the agent's would
				// match it.
				l.Rules = append([]Rule{{Priority: 1001, Src: netip.MustParsePrefix("10.0.1.1/32"), Table: 1001, Protocol: RouteProtocol, Other: true, Selectors: "iif lo"}}, l.Rules...)
				return l
			}(),
			owned: ownedOf("eth1", "10.0.1.1/31"),
			want: `conflict rail -1 (): ip rule del from 10.0.1.1 lookup 1001 priority 1001 protocol 171 not removed: the kernel would match foreign rule "1001: from 10.0.1.1/32 iif lo lookup 1001 proto 171" first; remove or change that rule, then run again
ip route del 10.0.1.0/31 dev eth1 table 1001 proto 171 scope link src 10.0.1.1
ip address del 10.0.1.1/31 dev eth1
`,
		},
		{
			name: "an empty desired state removes nothing", rails: nil,
			live:  converged(r0, r1),
			owned: ownedOf("eth1", "10.0.1.1/31"),
			want:  "",
		},
		{
			name: "rules marked 171 outside the priority or table range are not the agent's", rails: []RailLink{r0},
			live: func() LiveState {
				l := converged(r0)
				l.Rules = append(l.Rules,
					Rule{Priority: 900, Src: netip.MustParsePrefix("10.9.9.9/32"), Table: 1005, Protocol: RouteProtocol},
					Rule{Priority: 5000, Src: netip.MustParsePrefix("10.9.9.9/32"), Table: 1005, Protocol: RouteProtocol},
					Rule{Priority: 1007, Src: netip.MustParsePrefix("10.9.9.9/32"), Table: 77, Protocol: RouteProtocol})
				return l
			}(),
			want: "",
		},
		{
			name: "an address someone else added exactly as desired is not re-added or owned", rails: []RailLink{r1},
			live: converged(r1), owned: Owned{}, want: "",
		},
		{
			name: "SLAAC", rails: []RailLink{func() RailLink { r := rail(3, "eth3", "", "fc00:0:0:4::1/127"); r.SLAAC = true; return r }()},
			live: converged(rail(3, "eth3", "", "fc00:0:0:4::1/127")),
			want: "sysctl -w net.ipv6.conf.eth3.accept_ra=1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.owned.Addrs == nil {
				tc.owned.Addrs = map[string][]netip.Prefix{}
			}
			got := transcript(PlanLinks(tc.rails, tc.live, tc.owned, tr))
			if got != tc.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestCheckLive(t *testing.T) {
	r0 := rail(0, "eth0", "10.0.0.1/31", "")
	live := converged(r0)
	link := live.Links["eth0"]
	link.MaxMTU = 1500
	live.Links["eth0"] = link
	live.Routes = append(live.Routes, Route{Table: 1000, Dst: netip.MustParsePrefix("10.9.0.0/16"), Dev: "eth0", Protocol: 4})
	live.Rules = append(live.Rules,
		Rule{Priority: 1000, Table: 5, Protocol: 0},
		Rule{Priority: 20, Src: netip.MustParsePrefix("10.5.5.5/32"), Table: 1000, Protocol: 4})
	errs := CheckLive([]RailLink{r0, rail(1, "eth7", "10.0.1.1/31", "")}, live, tr)
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		"link.mtu: 9000 is above the maximum MTU of eth0 (1500)",
		"link.routing.table_base: table 1000 (rail 0) already holds foreign route 10.9.0.0/16 (proto 4)",
		`link.routing.rule_priority_base: priority 1000 (rail 0) is used by foreign rule "1000: from all lookup 5 proto 0"`,
		`link.routing.table_base: table 1000 (rail 0) is used by foreign rule "20: from 10.5.5.5/32 lookup 1000 proto 4"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("CheckLive:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if errs := CheckLive([]RailLink{r0}, converged(r0), tr); len(errs) != 0 {
		t.Errorf("a converged host is valid: %v", errs)
	}

	// Rules marked 171 that the agent does not own (outside its table or
	// priority range, or with another selector) are foreign like any other.
	r1 := rail(1, "eth1", "10.0.1.1/31", "")
	live = converged(r0, r1)
	live.Rules = append(live.Rules,
		Rule{Priority: 1001, Src: netip.MustParsePrefix("10.9.9.8/32"), Table: 5000, Protocol: RouteProtocol},
		Rule{Priority: 900, Src: netip.MustParsePrefix("10.9.9.7/32"), Table: 1001, Protocol: RouteProtocol},
		Rule{Priority: 1000, Src: netip.MustParsePrefix("10.0.0.1/32"), Table: 1000, Protocol: RouteProtocol, Other: true, Selectors: "iif lo"})
	got = nil
	for _, e := range CheckLive([]RailLink{r0, r1}, live, tr) {
		got = append(got, e.Error())
	}
	want = []string{
		`link.routing.rule_priority_base: priority 1000 (rail 0) is used by foreign rule "1000: from 10.0.0.1/32 iif lo lookup 1000 proto 171"`,
		`link.routing.rule_priority_base: priority 1001 (rail 1) is used by foreign rule "1001: from 10.9.9.8/32 lookup 5000 proto 171"`,
		`link.routing.table_base: table 1001 (rail 1) is used by foreign rule "900: from 10.9.9.7/32 lookup 1001 proto 171"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("CheckLive with foreign rules marked 171:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSysctlCommand(t *testing.T) {
	if got := SysctlCommand("net/ipv4/conf/eth0.100/arp_ignore", "1"); got != "sysctl -w net.ipv4.conf.eth0/100.arp_ignore=1" {
		t.Errorf("VLAN sysctl = %s", got)
	}
}
