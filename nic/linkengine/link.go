package linkengine

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// RouteProtocol marks the routes and policy rules the agent owns (rtm_protocol
// and FRA_PROTOCOL); /etc/iproute2/rt_protos.d/roce-agent.conf names it.
const RouteProtocol = 171

// AddrProtocol marks the addresses the agent adds (IFA_PROTO, Linux 5.18
// and later): ownership lives in the kernel, and the ownership record under
// the state directory is only a fallback for older kernels.
const AddrProtocol = RouteProtocol

// RailLink is the desired link state of one rail: the netdev up with an
// MTU, per-interface sysctls, a /31 and a /127 host address, and a routing
// table of its own selected by a source rule, holding the rail's prefixes
// via the leaf (the other address of the /31 and /127).
type RailLink struct {
	Rail   int
	Netdev string
	MTU    int
	// IPv4 is the host address with its /31, IPv4Leaf the leaf's; both
	// invalid when the rail has no IPv4. Likewise IPv6 with /127.
	IPv4, IPv6         netip.Prefix
	IPv4Leaf, IPv6Leaf netip.Addr
	// Routes are reached through the rail's leaf.
	Routes       []netip.Prefix
	Table        int
	RulePriority int
	// SLAAC accepts router advertisements (accept_ra=1) instead of static
	// IPv6 only (accept_ra=0).
	SLAAC bool
}

// PeerAddr is the other address of a /31 or /127 point-to-point pair: the
// leaf's address for a host address, and the reverse.
func PeerAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	b[len(b)-1] ^= 1
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Sysctls returns the per-interface sysctls a rail wants, keyed by their
// /proc/sys path below /proc/sys ("net/ipv4/conf/<if>/arp_ignore").
func (r RailLink) Sysctls() map[string]string {
	v4 := "net/ipv4/conf/" + r.Netdev + "/"
	out := map[string]string{
		v4 + "arp_ignore":   "1", // answer ARP only for addresses on the interface
		v4 + "arp_announce": "2", // source ARP from the interface's own address
		v4 + "rp_filter":    "2", // loose: replies may arrive on another rail
	}
	if r.IPv6.IsValid() {
		v6 := "net/ipv6/conf/" + r.Netdev + "/"
		out[v6+"keep_addr_on_down"] = "1"
		if r.SLAAC {
			out[v6+"accept_ra"] = "1"
		} else {
			out[v6+"accept_ra"] = "0"
		}
	}
	return out
}

// Route is a route as the planner sees it.
type Route struct {
	Table    int
	Dst      netip.Prefix
	Gw       netip.Addr // invalid for a link-scope route
	Dev      string
	Src      netip.Addr // preferred source, invalid when unset
	Protocol int
}

// routeKey identifies a route the way the kernel does for replace: table
// and destination.
type routeKey struct {
	table int
	dst   netip.Prefix
}

func (r Route) key() routeKey { return routeKey{r.Table, r.Dst} }

// same reports whether two routes are equal in everything the agent sets.
func (r Route) same(o Route) bool {
	return r.Table == o.Table && r.Dst == o.Dst && r.Gw == o.Gw && r.Dev == o.Dev && r.Src == o.Src && r.Protocol == o.Protocol
}

// Rule is a policy routing rule as the planner sees it. Other is true when
// the rule also has selectors the agent never sets (iif, fwmark, dst, ...),
// so it cannot be one of the agent's.
type Rule struct {
	Priority int
	Src      netip.Prefix
	Table    int
	Protocol int
	Other    bool
	// Selectors describes the other selectors ("iif lo fwmark 0x5").
	Selectors string
}

// owned reports whether the rule is one the agent may remove: marked with
// RouteProtocol, with no other selector, at a priority and a table of its
// range.
func (r Rule) owned(tr TableRange) bool {
	return r.Protocol == RouteProtocol && !r.Other && tr.HasPriority(r.Priority) && tr.HasTable(r.Table)
}

// lookalike reports whether o is a different rule that a deletion of r
// would match too: the kernel treats every selector a delete request
// leaves out as a wildcard, so deleting r would delete o if it comes first.
func (r Rule) lookalike(o Rule) bool {
	return o.Other && o.Priority == r.Priority && o.Src == r.Src && o.Table == r.Table && o.Protocol == r.Protocol
}

func (r Rule) family() string {
	if r.Src.Addr().Is6() {
		return "-6 "
	}
	return ""
}

// Link is the live state of one netdev.
type Link struct {
	Name   string
	Index  int
	Up     bool
	MTU    int
	MaxMTU int // IFLA_MAX_MTU; 0 when the kernel did not say
	Addrs  []netip.Prefix
	// MarkedAddrs are the addresses the kernel marks with AddrProtocol.
	MarkedAddrs []netip.Prefix
}

// owns reports whether the agent owns addr on link: the kernel marks it
// with AddrProtocol; on a kernel without IFA_PROTO, the ownership record
// has it. Where the kernel can mark, the record never claims an address
// (a stale entry must not make someone else's address the agent's).
func (l LiveState) owns(link Link, owned Owned, addr netip.Prefix) bool {
	return hasPrefix(link.MarkedAddrs, addr) || (!l.AddrProto && owned.Has(link.Name, addr))
}

// LiveState is what the kernel has: the rail netdevs (absent ones are
// missing from Links), the routes of the agent's table range, every policy
// rule, and the rail sysctls ("" for one that could not be read).
type LiveState struct {
	Links   map[string]Link
	Routes  []Route
	Rules   []Rule
	Sysctls map[string]string
	// AddrProto says the kernel records who added an address (IFA_PROTO,
	// Linux 5.18 and later): ownership of addresses comes from it alone.
	AddrProto bool
}

// ChangeKind says what a change does.
type ChangeKind string

// The kinds of change, in the order a rail applies them.
const (
	LinkUp    ChangeKind = "link-up"
	LinkMTU   ChangeKind = "link-mtu"
	SysctlSet ChangeKind = "sysctl"
	AddrAdd   ChangeKind = "addr-add"
	RuleAdd   ChangeKind = "rule-add"
	RouteSet  ChangeKind = "route-replace"
	RouteDel  ChangeKind = "route-del"
	RuleDel   ChangeKind = "rule-del"
	AddrDel   ChangeKind = "addr-del"
)

var kindOrder = map[ChangeKind]int{LinkUp: 0, LinkMTU: 1, SysctlSet: 2, AddrAdd: 3, RuleAdd: 4, RouteSet: 5, RouteDel: 6, RuleDel: 7, AddrDel: 8}

// Change is one write to the kernel. Command is the iproute2 or sysctl
// command it equals.
type Change struct {
	Rail   int // -1 for an owned object of no configured rail
	Netdev string
	// LinkIndex is the netdev's index when the plan was made.
	LinkIndex int
	Kind      ChangeKind
	Command   string

	MTU    int
	Sysctl string // path below /proc/sys
	Value  string
	Addr   netip.Prefix
	Rule   Rule
	Route  Route
}

// Conflict is foreign state that stops one change of a rail (or, for a
// missing netdev, the whole rail): reported, never "fixed". The rail's
// other changes are still made.
type Conflict struct {
	Rail   int
	Netdev string
	// Object is what the agent did not change ("address 10.0.1.1/31 on
	// rail1", "netdev rail3").
	Object string
	// Owner is what holds it instead, and why it is not the agent's.
	Owner string
	// Reason is the whole sentence, naming the object and its owner.
	Reason string
}

func (c Conflict) String() string {
	return fmt.Sprintf("rail %d (%s): %s", c.Rail, c.Netdev, c.Reason)
}

// Owned is what the agent added and may therefore change or remove:
// addresses by netdev (the ownership record under the state directory).
// Routes and rules are recognised by RouteProtocol instead.
type Owned struct {
	Addrs map[string][]netip.Prefix `json:"addresses"`
}

// Has reports whether the agent added addr on netdev.
func (o Owned) Has(netdev string, addr netip.Prefix) bool {
	for _, a := range o.Addrs[netdev] {
		if a == addr {
			return true
		}
	}
	return false
}

// TableRange is the routing table and rule priority range the agent owns.
type TableRange struct {
	TableBase, PriorityBase, Size int
}

// railOf is the rail a removal belonged to, for the log: the rail its
// table or priority encodes; -1 for an address, which says nothing.
func (t TableRange) railOf(c Change) int {
	switch {
	case c.Kind == RouteDel && t.HasTable(c.Route.Table):
		return c.Route.Table - t.TableBase
	case c.Kind == RuleDel && t.HasPriority(c.Rule.Priority):
		return c.Rule.Priority - t.PriorityBase
	}
	return -1
}

// HasTable reports whether table is in the agent's range.
func (t TableRange) HasTable(table int) bool {
	return table >= t.TableBase && table < t.TableBase+t.Size
}

// HasPriority reports whether prio is in the agent's range.
func (t TableRange) HasPriority(prio int) bool {
	return prio >= t.PriorityBase && prio < t.PriorityBase+t.Size
}

// LinkPlan is the outcome of planning: the changes per rail in the order to
// apply them, and the rails that conflict with foreign state.
type LinkPlan struct {
	Changes   []Change
	Conflicts []Conflict
}

// Empty reports a converged host.
func (p LinkPlan) Empty() bool { return len(p.Changes) == 0 && len(p.Conflicts) == 0 }

// Commands lists the changes as the commands they equal.
func (p LinkPlan) Commands() []string {
	out := make([]string, len(p.Changes))
	for i, c := range p.Changes {
		out[i] = c.Command
	}
	return out
}

// PlanLinks diffs desired rails against the live state. It only ever plans
// changes to rail netdevs, to addresses the agent owns (marked by the
// kernel or in the ownership record), and to routes and rules carrying
// RouteProtocol in the agent's range. A rail whose netdev is missing gets a
// conflict and no changes; a foreign address in a rail's /31 or /127 stops
// that family's address, rule and routes, and the rail's other changes are
// still planned. Owned objects no rail wants any more are removed, but only
// when at least one rail is desired: an empty desired state removes
// nothing (PlanTeardown is the only way to remove everything).
func PlanLinks(desired []RailLink, live LiveState, owned Owned, tr TableRange) LinkPlan {
	var plan LinkPlan
	wantAddr := map[string]map[netip.Prefix]bool{}
	wantRoute := map[routeKey]bool{}
	wantRule := map[Rule]bool{}
	blocked := map[string]bool{} // netdevs of conflicting rails: keep their owned state as is
	keepAddr := map[netip.Addr]bool{}
	keepTable, keepPrio := map[int]bool{}, map[int]bool{}

	for _, r := range desired {
		link, ok := live.Links[r.Netdev]
		if !ok || r.Netdev == "" {
			obj := "netdev " + r.Netdev
			if r.Netdev == "" {
				obj = "netdev (none found for the rail)"
			}
			plan.Conflicts = append(plan.Conflicts, Conflict{Rail: r.Rail, Netdev: r.Netdev, Object: obj, Owner: "absent",
				Reason: obj + " does not exist in the rails' network namespace"})
			blocked[r.Netdev] = true
			// The rail keeps whatever it already has (say it was re-pinned
			// to a netdev that is not there yet): the routes of its table,
			// the rules at its priority, and the addresses those rules or
			// the rail name.
			keepTable[r.Table], keepPrio[r.RulePriority] = true, true
			for _, a := range []netip.Prefix{r.IPv4, r.IPv6} {
				if a.IsValid() {
					keepAddr[a.Addr()] = true
				}
			}
			continue
		}
		skip := map[bool]bool{} // family (true: IPv6) held by a foreign address
		for _, c := range foreignInRail(r, link, owned, live) {
			plan.Conflicts = append(plan.Conflicts, c.Conflict)
			skip[c.v6] = true
			blocked[r.Netdev] = true
		}
		var ch []Change
		add := func(c Change) {
			c.Rail, c.Netdev, c.LinkIndex = r.Rail, r.Netdev, link.Index
			ch = append(ch, c)
		}
		if !link.Up {
			add(Change{Kind: LinkUp, Command: fmt.Sprintf("ip link set dev %s up", r.Netdev)})
		}
		if link.MTU != r.MTU {
			add(Change{Kind: LinkMTU, MTU: r.MTU, Command: fmt.Sprintf("ip link set dev %s mtu %d", r.Netdev, r.MTU)})
		}
		sysctls := r.Sysctls()
		keys := make([]string, 0, len(sysctls))
		for k := range sysctls {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if live.Sysctls[k] != sysctls[k] {
				add(Change{Kind: SysctlSet, Sysctl: k, Value: sysctls[k], Command: SysctlCommand(k, sysctls[k])})
			}
		}
		wantAddr[r.Netdev] = map[netip.Prefix]bool{}
		for _, a := range []netip.Prefix{r.IPv4, r.IPv6} {
			if !a.IsValid() {
				continue
			}
			wantAddr[r.Netdev][a] = true
			if !skip[a.Addr().Is6()] && !hasPrefix(link.Addrs, a) {
				add(Change{Kind: AddrAdd, Addr: a, Command: addrCommand("add", a, r.Netdev)})
			}
		}
		for _, rule := range r.rules() {
			wantRule[rule] = true
			if !skip[rule.Src.Addr().Is6()] && !hasRule(live.Rules, rule) {
				add(Change{Kind: RuleAdd, Rule: rule, Command: ruleCommand("add", rule)})
			}
		}
		for _, rt := range r.routes() {
			wantRoute[rt.key()] = true
			if !skip[rt.Dst.Addr().Is6()] && !hasRoute(live.Routes, rt) {
				add(Change{Kind: RouteSet, Route: rt, Command: routeCommand("replace", rt)})
			}
		}
		plan.Changes = append(plan.Changes, ch...)
	}
	if len(desired) == 0 {
		return plan
	}

	// Remove what the agent owns and no rail wants any more.
	railOf := func(netdev string) int {
		for _, r := range desired {
			if r.Netdev == netdev {
				return r.Rail
			}
		}
		return -1
	}
	railOfTable := func(table int) int {
		for _, r := range desired {
			if r.Table == table {
				return r.Rail
			}
		}
		return -1
	}
	for _, rule := range live.Rules {
		if keepPrio[rule.Priority] && rule.Src.IsValid() {
			keepAddr[rule.Src.Addr()] = true
		}
	}
	for _, c := range ownedObjects(live, owned, tr) {
		switch c.Kind {
		case RouteDel:
			if wantRoute[c.Route.key()] || blocked[c.Netdev] || keepTable[c.Route.Table] {
				continue
			}
			c.Rail = railOf(c.Netdev)
		case RuleDel:
			if wantRule[c.Rule] || keepPrio[c.Rule.Priority] {
				continue
			}
			c.Rail = railOfTable(c.Rule.Table)
		case AddrDel:
			if wantAddr[c.Netdev][c.Addr] || blocked[c.Netdev] || keepAddr[c.Addr.Addr()] {
				continue
			}
			c.Rail = railOf(c.Netdev)
		}
		plan.Changes = append(plan.Changes, c)
	}
	for _, h := range heldRules(live, tr) {
		plan.Conflicts = append(plan.Conflicts, Conflict{Rail: -1, Object: "an owned rule", Owner: "a foreign rule with more selectors", Reason: h})
	}
	sort.SliceStable(plan.Changes, func(i, j int) bool {
		a, b := plan.Changes[i], plan.Changes[j]
		if a.Rail != b.Rail {
			return railSortKey(a.Rail) < railSortKey(b.Rail)
		}
		return kindOrder[a.Kind] < kindOrder[b.Kind]
	})
	return plan
}

// ownedObjects lists, as removals, everything the agent owns in the live
// state: routes marked RouteProtocol in its tables, rules marked
// RouteProtocol at its priorities and tables with no other selector, and
// the addresses it owns. Rail is -1 on each.
func ownedObjects(live LiveState, owned Owned, tr TableRange) []Change {
	var out []Change
	for _, rt := range live.Routes {
		if rt.Protocol == RouteProtocol && tr.HasTable(rt.Table) {
			out = append(out, Change{Rail: -1, Netdev: rt.Dev, LinkIndex: live.Links[rt.Dev].Index, Kind: RouteDel, Route: rt, Command: routeCommand("del", rt)})
		}
	}
	for _, rule := range live.Rules {
		if !rule.owned(tr) {
			continue
		}
		held := false
		for _, o := range live.Rules {
			held = held || rule.lookalike(o)
		}
		if held {
			// The kernel would delete the foreign look-alike instead.
			continue
		}
		out = append(out, Change{Rail: -1, Kind: RuleDel, Rule: rule, Command: ruleCommand("del", rule)})
	}
	netdevs := make([]string, 0, len(live.Links))
	for nd := range live.Links {
		netdevs = append(netdevs, nd)
	}
	sort.Strings(netdevs)
	for _, nd := range netdevs {
		link := live.Links[nd]
		for _, a := range link.Addrs {
			if live.owns(link, owned, a) {
				out = append(out, Change{Rail: -1, Netdev: nd, LinkIndex: link.Index, Kind: AddrDel, Addr: a, Command: addrCommand("del", a, nd)})
			}
		}
	}
	return out
}

// PlanTeardown is every removal that gives back what the agent owns:
// routes, then rules, then addresses. Nothing else is touched: MTU, link
// state and sysctls stay as they are. held names owned rules that cannot
// be removed safely (heldRules).
func PlanTeardown(live LiveState, owned Owned, tr TableRange) (changes []Change, held []string) {
	out := ownedObjects(live, owned, tr)
	sort.SliceStable(out, func(i, j int) bool { return kindOrder[out[i].Kind] < kindOrder[out[j].Kind] })
	return out, heldRules(live, tr)
}

// heldRules names the agent's rules that a foreign rule with the same
// priority, source and table (and more selectors) shadows: a delete
// request could remove the foreign one, so they are left, and said so.
func heldRules(live LiveState, tr TableRange) []string {
	var out []string
	for _, rule := range live.Rules {
		if !rule.owned(tr) {
			continue
		}
		for _, o := range live.Rules {
			if rule.lookalike(o) {
				out = append(out, fmt.Sprintf("%s not removed: the kernel would match foreign rule %s first; remove or change that rule, then run again", ruleCommand("del", rule), describeRule(o)))
				break
			}
		}
	}
	return out
}

func railSortKey(r int) int {
	if r < 0 {
		return 1 << 30
	}
	return r
}

// railConflict is a Conflict with the address family it holds.
type railConflict struct {
	Conflict
	v6 bool
}

// foreignInRail finds foreign addresses inside the rail's /31 or /127
// other than the desired host address itself, one conflict per family.
func foreignInRail(r RailLink, link Link, owned Owned, live LiveState) []railConflict {
	var out []railConflict
	for _, want := range []netip.Prefix{r.IPv4, r.IPv6} {
		if !want.IsValid() {
			continue
		}
		for _, have := range link.Addrs {
			if have == want || live.owns(link, owned, have) {
				continue
			}
			if want.Masked().Contains(have.Addr()) || have.Masked().Contains(want.Addr()) {
				fam := "IPv4"
				if want.Addr().Is6() {
					fam = "IPv6"
				}
				obj := fmt.Sprintf("address %s on %s", want, r.Netdev)
				owner := fmt.Sprintf("foreign address %s (not marked protocol %d, not in the ownership record)", have, AddrProtocol)
				what := "not added"
				then := "wait for it"
				if hasPrefix(link.Addrs, want) {
					what, then = "held", "are left as they are until it is gone"
				}
				out = append(out, railConflict{Conflict{Rail: r.Rail, Netdev: r.Netdev, Object: obj, Owner: owner,
					Reason: fmt.Sprintf("%s %s: foreign address %s on %s overlaps the rail's %s (it is not marked protocol %d nor in the ownership record); the rail's %s rule and routes %s",
						obj, what, have, r.Netdev, want.Masked(), AddrProtocol, fam, then)}, want.Addr().Is6()})
				break
			}
		}
	}
	return out
}

// rules are the rail's source rules, one per family.
func (r RailLink) rules() []Rule {
	var out []Rule
	for _, a := range []netip.Prefix{r.IPv4, r.IPv6} {
		if a.IsValid() {
			out = append(out, Rule{Priority: r.RulePriority, Src: netip.PrefixFrom(a.Addr(), a.Addr().BitLen()), Table: r.Table, Protocol: RouteProtocol})
		}
	}
	return out
}

// routes are the rail table's routes: the rail's own /31 and /127 on the
// link, then each routed prefix via the leaf of its family.
func (r RailLink) routes() []Route {
	var out []Route
	for _, a := range []netip.Prefix{r.IPv4, r.IPv6} {
		if a.IsValid() {
			out = append(out, Route{Table: r.Table, Dst: a.Masked(), Dev: r.Netdev, Src: a.Addr(), Protocol: RouteProtocol})
		}
	}
	for _, p := range r.Routes {
		leaf := r.IPv4Leaf
		if p.Addr().Is6() {
			leaf = r.IPv6Leaf
		}
		if !leaf.IsValid() {
			continue
		}
		out = append(out, Route{Table: r.Table, Dst: p.Masked(), Gw: leaf, Dev: r.Netdev, Protocol: RouteProtocol})
	}
	return out
}

func hasPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, a := range list {
		if a == p {
			return true
		}
	}
	return false
}

func hasRule(list []Rule, r Rule) bool {
	for _, l := range list {
		if l == r {
			return true
		}
	}
	return false
}

func hasRoute(list []Route, r Route) bool {
	for _, l := range list {
		if l.same(r) {
			return true
		}
	}
	return false
}

// SysctlCommand renders a sysctl write; dots in an interface name become
// slashes, as sysctl(8) expects.
func SysctlCommand(path, value string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return fmt.Sprintf("sysctl -w %s=%s", strings.Join(parts, "."), value)
}

func addrCommand(verb string, a netip.Prefix, dev string) string {
	if a.Addr().Is6() {
		if verb == "add" {
			return fmt.Sprintf("ip -6 address add %s dev %s nodad", a, dev)
		}
		return fmt.Sprintf("ip -6 address del %s dev %s", a, dev)
	}
	return fmt.Sprintf("ip address %s %s dev %s", verb, a, dev)
}

func ruleCommand(verb string, r Rule) string {
	return fmt.Sprintf("ip %srule %s from %s lookup %d priority %d protocol %d", r.family(), verb, r.Src.Addr(), r.Table, r.Priority, r.Protocol)
}

func routeCommand(verb string, r Route) string {
	fam := ""
	if r.Dst.Addr().Is6() {
		fam = "-6 "
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ip %sroute %s %s", fam, verb, r.Dst)
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	fmt.Fprintf(&b, " dev %s table %d proto %d", r.Dev, r.Table, r.Protocol)
	if !r.Gw.IsValid() {
		b.WriteString(" scope link")
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	return b.String()
}

// CheckLive validates desired rails against the live state before any
// change: an MTU above the netdev's maximum, and a rail table or rule
// priority that foreign routes or rules already use. Every problem is
// returned, each naming the config field. A missing netdev is not checked
// here: it stops only its own rail (PlanLinks reports a conflict).
func CheckLive(desired []RailLink, live LiveState, tr TableRange) []error {
	var errs []error
	for _, r := range desired {
		link, ok := live.Links[r.Netdev]
		if !ok {
			continue
		}
		if link.MaxMTU > 0 && r.MTU > link.MaxMTU {
			errs = append(errs, fmt.Errorf("link.mtu: %d is above the maximum MTU of %s (%d)", r.MTU, r.Netdev, link.MaxMTU))
		}
		for _, rt := range live.Routes {
			if rt.Table == r.Table && rt.Protocol != RouteProtocol {
				errs = append(errs, fmt.Errorf("link.routing.table_base: table %d (rail %d) already holds foreign route %s (proto %d)", r.Table, r.Rail, rt.Dst, rt.Protocol))
				break
			}
		}
		for _, rule := range live.Rules {
			if rule.owned(tr) {
				continue
			}
			switch {
			case rule.Priority == r.RulePriority:
				errs = append(errs, fmt.Errorf("link.routing.rule_priority_base: priority %d (rail %d) is used by foreign rule %s", r.RulePriority, r.Rail, describeRule(rule)))
			case rule.Table == r.Table:
				errs = append(errs, fmt.Errorf("link.routing.table_base: table %d (rail %d) is used by foreign rule %s", r.Table, r.Rail, describeRule(rule)))
			}
		}
	}
	return errs
}

func describeRule(r Rule) string {
	src := "all"
	if r.Src.IsValid() {
		src = r.Src.String()
	}
	sel := ""
	if r.Selectors != "" {
		sel = " " + r.Selectors
	}
	return fmt.Sprintf("\"%d: from %s%s lookup %d proto %d\"", r.Priority, src, sel, r.Table, r.Protocol)
}
