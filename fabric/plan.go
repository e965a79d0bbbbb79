// Package fabric is the fabric plan (nodes, per-rail address pools,
// tenants in server or GPU isolation): parsed strictly, checked with every
// conflict named, indexed (Fabric) to derive each node's NodeConfig, and
// changed by tenant puts and moves, knowing which nodes a change touches.
// It is plain computation (no etcd, no netlink): the controller serves
// from it and the lab builds its leaves from it.
package fabric

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// FieldError is a problem of one field of a plan or a request body (400).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ConflictError is a change that contradicts the stored state (409), such
// as a GPU that another tenant has.
type ConflictError struct{ Reason string }

func (e *ConflictError) Error() string { return e.Reason }

// NotFoundError names what is not in the plan (404).
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }

// Plan defaults: what an omitted key means.
const (
	DefaultRails    = 8
	DefaultMTU      = 9000
	DefaultMaxPeers = 16
	defaultBase     = 1000
	// MaxPlanBytes bounds a plan file.
	MaxPlanBytes = 64 << 20
)

var tenantIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidNodeName reports whether s can name a node: it is a URL path
// segment and an etcd key part, so letters, digits, '.', '_' and '-',
// starting with a letter or digit, at most 253 bytes.
func ValidNodeName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidTenantID reports whether s can name a tenant (at most 63 bytes of
// the node name alphabet).
func ValidTenantID(s string) bool { return tenantIDRE.MatchString(s) }

// ParsePlan decodes a fabric plan (YAML or JSON), refusing unknown keys,
// fills the defaults (Defaults) and checks it (CheckPlan).
func ParsePlan(data []byte) (v1.FabricPlan, error) {
	var p v1.FabricPlan
	if len(data) > MaxPlanBytes {
		return p, fmt.Errorf("plan: %d bytes, more than %d", len(data), MaxPlanBytes)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	if doc == nil {
		return p, errors.New("plan: the document is empty")
	}
	js, err := json.Marshal(jsonable(doc))
	if err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	if err := DecodeStrict(js, &p); err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	p = Defaults(p)
	return p, CheckPlan(p)
}

// jsonable turns a YAML tree into one encoding/json takes: mapping keys
// become strings (dscp_to_priority has integer keys).
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonable(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonable(e)
		}
		return t
	}
	return v
}

// DecodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data; an unknown field or a type mismatch is a *FieldError.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return &FieldError{Field: te.Field, Reason: fmt.Sprintf("want %s, got a JSON %s", te.Type, te.Value)}
		case errors.As(err, &se):
			return &FieldError{Field: "(body)", Reason: fmt.Sprintf("not JSON at byte %d: %v", se.Offset, err)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &FieldError{Field: f, Reason: "unknown field"}
		}
		return &FieldError{Field: "(body)", Reason: err.Error()}
	}
	if dec.More() {
		return &FieldError{Field: "(body)", Reason: "data after the JSON value"}
	}
	return nil
}

// Defaults fills what an omitted key means: 8 rails, MTU 9000, tables and
// rule priorities from 1000, 16 probe peers per rail.
func Defaults(p v1.FabricPlan) v1.FabricPlan {
	if p.Rails == 0 {
		p.Rails = DefaultRails
	}
	if p.Link.MTU == 0 {
		p.Link.MTU = DefaultMTU
	}
	if p.Link.Routing.TableBase == 0 {
		p.Link.Routing.TableBase = defaultBase
	}
	if p.Link.Routing.RulePriorityBase == 0 {
		p.Link.Routing.RulePriorityBase = defaultBase
	}
	if p.Probes.MaxPeers == 0 {
		p.Probes.MaxPeers = DefaultMaxPeers
	}
	return p
}

// CheckPlan reports every problem of a plan, each a *FieldError, joined:
// overlapping pools, a node name or index used twice, a tenant member that
// is not a node, a GPU in two tenants, a VNI or VRF used twice. Defaults
// must have been applied.
func CheckPlan(p v1.FabricPlan) error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if p.Rails < 1 || p.Rails > v1.RailTableSpan {
		fail("rails", "%d is outside 1-%d", p.Rails, v1.RailTableSpan)
	}
	if p.Probes.MaxPeers < 1 || p.Probes.MaxPeers > 1024 {
		fail("probes.max_peers", "%d is outside 1-1024", p.Probes.MaxPeers)
	}
	// Link, pools and QoS: the node config's own rules, on a node of
	// index 0 holding them.
	for _, err := range (v1.NodeConfig{Link: p.Link, Addressing: p.Addressing, QoS: p.QoS, Node: v1.NodeIdentity{Index: new(int)}}).Problems() {
		field, reason, _ := strings.Cut(err.Error(), ": ")
		fail(field, "%s", reason)
	}
	pools := [2][]netip.Prefix{v1.ParsePools(p.Addressing.IPv4Pools, false), v1.ParsePools(p.Addressing.IPv6Pools, true)}
	for fam, list := range [2][]string{p.Addressing.IPv4Pools, p.Addressing.IPv6Pools} {
		field := [2]string{"addressing.ipv4_pools", "addressing.ipv6_pools"}[fam]
		if len(list) > 0 && len(list) != p.Rails && p.Rails >= 1 {
			fail(field, "has %d pools for %d rails (rail n takes pool n)", len(list), p.Rails)
		}
	}
	if len(p.Addressing.IPv4Pools) == 0 && len(p.Addressing.IPv6Pools) == 0 {
		fail("addressing", "needs ipv4_pools or ipv6_pools (rail n takes pool n)")
	}
	names := make(map[string]int, len(p.Nodes))
	indexes := make(map[int]int, len(p.Nodes))
	maxIndex := -1
	for i, n := range p.Nodes {
		f := func() string { return "nodes[" + strconv.Itoa(i) + "]" }
		if !ValidNodeName(n.Name) {
			fail(f()+".name", "%s is not a node name (letters, digits, '.', '_', '-'; at most 253 bytes)", v1.Clip(n.Name))
		} else if j, dup := names[n.Name]; dup {
			fail(f()+".name", "%q is also nodes[%d]", n.Name, j)
		} else {
			names[n.Name] = i
		}
		if len(n.Cabling) > 0 {
			for _, err := range v1.CablingProblems(n.Cabling, p.Rails, f()+".cabling") {
				field, reason, _ := strings.Cut(err.Error(), ": ")
				fail(field, "%s", reason)
			}
		}
		if n.Index < 0 {
			fail(f()+".index", "%d is negative", n.Index)
		} else if j, dup := indexes[n.Index]; dup {
			fail(f()+".index", "index %d is also nodes[%d] (%s)", n.Index, j, p.Nodes[j].Name)
		} else {
			indexes[n.Index] = i
			maxIndex = max(maxIndex, n.Index)
		}
	}
	if maxIndex >= 0 {
		for fam := range pools {
			for r, pool := range pools[fam] {
				if pool.IsValid() && !roomFor(pool, maxIndex) {
					field := [2]string{"addressing.ipv4_pools", "addressing.ipv6_pools"}[fam]
					fail(fmt.Sprintf("%s[%d]", field, r), "%s has no room for node index %d", pool, maxIndex)
				}
			}
		}
	}

	ids, vrfs, vnis := map[string]int{}, map[string]int{}, map[int]int{}
	// GPU (node position, GPU) -> the position of the tenant that has it
	owner := make(map[[2]int]int, len(p.Nodes)*max(p.Rails, 1))
	for i, t := range p.Tenants {
		f := fmt.Sprintf("tenants[%d]", i)
		errs = append(errs, tenantProblems(t, f, p.Rails, names)...)
		if j, dup := ids[t.ID]; dup && t.ID != "" {
			fail(f+".id", "%q is also tenants[%d]", t.ID, j)
		}
		ids[t.ID] = i
		if j, dup := vrfs[t.VRF]; dup && t.VRF != "" {
			fail(f+".vrf", "%q is also tenants[%d] (%s)", t.VRF, j, p.Tenants[j].ID)
		}
		vrfs[t.VRF] = i
		if j, dup := vnis[t.VNI]; dup && t.VNI != 0 {
			fail(f+".vni", "%d is also tenants[%d] (%s)", t.VNI, j, p.Tenants[j].ID)
		}
		vnis[t.VNI] = i
		for j, m := range t.Members {
			node, ok := names[m.Node]
			if !ok {
				continue // tenantProblems named it
			}
			for _, g := range memberGPUs(m, p.Rails) {
				k := [2]int{node, g}
				if other, taken := owner[k]; taken {
					fail(fmt.Sprintf("%s.members[%d]", f, j), "GPU %d of %s is also in tenants[%d] (%s)", g, m.Node, other, p.Tenants[other].ID)
					continue
				}
				owner[k] = i
			}
		}
	}
	return errors.Join(errs...)
}

// roomFor reports whether a pool holds the /31 (/127) of node index i.
func roomFor(p netip.Prefix, i int) bool {
	room := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()-1))
	return big.NewInt(int64(i)).Cmp(room) < 0
}

type gpuKey struct {
	node string
	gpu  int
}

// memberGPUs lists the GPUs a member brings: all of them for a whole node.
func memberGPUs(m v1.TenantMember, rails int) []int {
	if len(m.GPUs) > 0 {
		return m.GPUs
	}
	out := make([]int, max(rails, 0))
	for g := range out {
		out[g] = g
	}
	return out
}

// tenantProblems checks one tenant on its own: id, VRF, VNI, members that
// are nodes of the plan (nodes nil: not checked), GPUs in range and each
// node once.
func tenantProblems(t v1.Tenant, f string, rails int, nodes map[string]int) []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if !ValidTenantID(t.ID) {
		fail(f+".id", "%s is not a tenant id (letters, digits, '.', '_', '-'; at most 63 bytes)", v1.Clip(t.ID))
	}
	if t.VRF == "" || len(t.VRF) > 15 || strings.ContainsAny(t.VRF, "/: \t\n") {
		fail(f+".vrf", "%s is not a VRF name (1-15 characters, no '/', ':' or white space)", v1.Clip(t.VRF))
	}
	if t.VNI < 1 || t.VNI > 1<<24-1 {
		fail(f+".vni", "%d is outside 1-16777215", t.VNI)
	}
	seen := make(map[string]int, len(t.Members))
	for j, m := range t.Members {
		mf := func() string { return f + ".members[" + strconv.Itoa(j) + "]" }
		if nodes != nil {
			if _, ok := nodes[m.Node]; !ok {
				fail(mf()+".node", "%s is not a node of the plan", v1.Clip(m.Node))
			}
		}
		if k, dup := seen[m.Node]; dup {
			fail(mf()+".node", "%s is also %s.members[%d]: list its GPUs once", v1.Clip(m.Node), f, k)
		}
		seen[m.Node] = j
		if len(m.GPUs) == 0 {
			continue
		}
		gpus := map[int]bool{}
		for k, g := range m.GPUs {
			switch {
			case g < 0 || g >= rails:
				fail(fmt.Sprintf("%s.gpus[%d]", mf(), k), "%d is outside 0-%d", g, rails-1)
			case gpus[g]:
				fail(fmt.Sprintf("%s.gpus[%d]", mf(), k), "GPU %d is listed twice", g)
			}
			gpus[g] = true
		}
	}
	return errs
}

// Fabric is a checked plan indexed for deriving node configs one at a
// time: a tenant move re-derives only the nodes it can change. Nodes are
// numbered by their position in plan.Nodes; per-rail tables are indexed
// by node*rails+rail.
type Fabric struct {
	plan  v1.FabricPlan
	ids   map[string]int // node name -> position in plan.Nodes
	pools [2][]netip.Prefix
	// poolStr are the pools as text, by family and rail.
	poolStr [2][]string
	// binding is each GPU's tenant position in plan.Tenants (-1: none);
	// position its place in its ring.
	binding  []int32
	position []int32
	rings    map[ringKey][]int // node ids sorted by node index
	// addrs are each GPU's host addresses without prefix length (v4, v6),
	// shared with a fabric of the same nodes and pools.
	addrs [][2]string
}

type ringKey struct {
	tenant int
	rail   int
}

// NewFabric checks a plan (with defaults filled) and indexes it.
func NewFabric(p v1.FabricPlan) (*Fabric, error) { return NewFabricFrom(p, nil) }

// NewFabricFrom is NewFabric; prev (may be nil), a fabric of the same nodes
// and pools, lends its address table.
func NewFabricFrom(p v1.FabricPlan, prev *Fabric) (*Fabric, error) {
	p = Defaults(p)
	if err := CheckPlan(p); err != nil {
		return nil, err
	}
	rails := p.Rails
	f := &Fabric{
		plan: p, ids: make(map[string]int, len(p.Nodes)), rings: map[ringKey][]int{},
		binding: make([]int32, len(p.Nodes)*rails), position: make([]int32, len(p.Nodes)*rails),
	}
	f.pools[0] = v1.ParsePools(p.Addressing.IPv4Pools, false)
	f.pools[1] = v1.ParsePools(p.Addressing.IPv6Pools, true)
	for fam := range f.pools {
		for _, pool := range f.pools[fam] {
			f.poolStr[fam] = append(f.poolStr[fam], pool.String())
		}
	}
	for i, n := range p.Nodes {
		f.ids[n.Name] = i
	}
	for i := range f.binding {
		f.binding[i], f.position[i] = -1, -1
	}
	if prev != nil && prev.plan.Rails == rails && sameIndexes(prev.plan.Nodes, p.Nodes) && reflect.DeepEqual(prev.pools, f.pools) {
		f.addrs = prev.addrs
	} else {
		f.addrs = make([][2]string, len(p.Nodes)*rails)
		for i, n := range p.Nodes {
			for r := 0; r < rails; r++ {
				for fam := range f.pools {
					if r < len(f.pools[fam]) {
						f.addrs[i*rails+r][fam] = hostAddr(f.pools[fam][r], n.Index, 1).String()
					}
				}
			}
		}
	}
	for ti, t := range p.Tenants {
		for _, m := range t.Members {
			id := f.ids[m.Node]
			for _, g := range memberGPUs(m, rails) {
				f.binding[id*rails+g] = int32(ti)
				k := ringKey{ti, g}
				f.rings[k] = append(f.rings[k], id)
			}
		}
	}
	for k, ring := range f.rings {
		slices.SortFunc(ring, func(a, b int) int { return p.Nodes[a].Index - p.Nodes[b].Index })
		for i, id := range ring {
			f.position[id*rails+k.rail] = int32(i)
		}
	}
	return f, nil
}

// Plan returns the plan (defaults filled). The caller must not modify it.
func (f *Fabric) Plan() v1.FabricPlan { return f.plan }

// Nodes lists the node names, sorted.
func (f *Fabric) Nodes() []string {
	out := make([]string, 0, len(f.ids))
	for n := range f.ids {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Node returns a node of the plan.
func (f *Fabric) Node(name string) (v1.PlanNode, bool) {
	i, ok := f.ids[name]
	if !ok {
		return v1.PlanNode{}, false
	}
	return f.plan.Nodes[i], true
}

// Tenant returns a tenant of the plan.
func (f *Fabric) Tenant(id string) (v1.Tenant, bool) {
	for _, t := range f.plan.Tenants {
		if t.ID == id {
			return t, true
		}
	}
	return v1.Tenant{}, false
}

// RailTenant is the tenant rail r of a node belongs to ("" none).
func (f *Fabric) RailTenant(node string, rail int) string {
	i, ok := f.ids[node]
	if !ok || rail < 0 || rail >= f.plan.Rails {
		return ""
	}
	if ti := f.binding[i*f.plan.Rails+rail]; ti >= 0 {
		return f.plan.Tenants[ti].ID
	}
	return ""
}

// hostAddr is pool + 2*index + off: off 1 the host, 0 the leaf. The plan
// check makes sure it stays inside the pool.
// PairAddrs are node index's point-to-point pair in a rail pool: the
// leaf's address (pool + 2*index) and the host's (the next one).
func PairAddrs(pool netip.Prefix, index int) (leaf, host netip.Addr, err error) {
	if !pool.IsValid() || pool.Bits() >= pool.Addr().BitLen() || index < 0 || !roomFor(pool.Masked(), index) {
		return leaf, host, fmt.Errorf("pool %s has no room for node index %d", pool, index)
	}
	return hostAddr(pool.Masked(), index, 0), hostAddr(pool.Masked(), index, 1), nil
}

func hostAddr(pool netip.Prefix, index, off int) netip.Addr {
	a := pool.Addr()
	add := uint64(2*index + off)
	if a.Is4() {
		b := a.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(add))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	lo, carry := bits.Add64(binary.BigEndian.Uint64(b[8:]), add, 0)
	binary.BigEndian.PutUint64(b[8:], lo)
	binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+carry)
	return netip.AddrFrom16(b)
}

// Config derives a node's config, Generation 0 (the store sets it): one
// rail per GPU with its host and leaf addresses, routes (link.routes, else
// the rail's own pools), tenant and probe peers.
func (f *Fabric) Config(name string) (v1.NodeConfig, bool) {
	id, ok := f.ids[name]
	if !ok {
		return v1.NodeConfig{}, false
	}
	p := f.plan
	n := p.Nodes[id]
	idx := n.Index
	c := v1.NodeConfig{
		Node: v1.NodeIdentity{Name: n.Name, Index: &idx},
		Link: p.Link,
		QoS:  p.QoS,
	}
	c.Link.Routes = slices.Clone(p.Link.Routes)
	c.Rails = make([]v1.RailConfig, p.Rails)
	for r := range c.Rails {
		rail := r
		rc := v1.RailConfig{Rail: &rail}
		for fam, bits := range [2]int{31, 127} {
			if r >= len(f.pools[fam]) {
				continue
			}
			pool := f.pools[fam][r]
			host := f.addrs[id*p.Rails+r][fam] + "/" + strconv.Itoa(bits)
			leaf := hostAddr(pool, idx, 0).String()
			if fam == 0 {
				rc.IPv4, rc.LeafIPv4 = host, leaf
			} else {
				rc.IPv6, rc.LeafIPv6 = host, leaf
			}
			if len(p.Link.Routes) == 0 {
				rc.Routes = append(rc.Routes, f.poolStr[fam][r])
			}
		}
		for _, cab := range n.Cabling {
			if cab.Rail == r {
				rc.Leaf, rc.LeafPort = cab.Leaf, cab.Port
			}
		}
		if ti := f.binding[id*p.Rails+r]; ti >= 0 {
			t := p.Tenants[ti]
			rc.Tenant = &v1.TenantConfig{ID: t.ID, VRF: t.VRF, VNI: t.VNI}
			rc.Peers = f.peers(ringKey{int(ti), r}, id)
		}
		c.Rails[r] = rc
	}
	return c, true
}

// peerOffsets are the ring offsets of a member's probe peers in a ring
// of m: every other member when there are at most max_peers of them,
// else the max_peers/2 nearest on each side (so that the relation stays
// symmetric), nearest first.
func (f *Fabric) peerOffsets(m int) []int {
	if m < 2 {
		return nil
	}
	var offsets []int
	if m-1 <= f.plan.Probes.MaxPeers {
		for d := 1; d < m; d++ {
			offsets = append(offsets, d)
		}
	} else {
		h := max(f.plan.Probes.MaxPeers/2, 1)
		for d := 1; d <= h; d++ {
			offsets = append(offsets, d, m-d)
		}
	}
	return offsets
}

// peers is a rail's probe peers (peerOffsets).
func (f *Fabric) peers(k ringKey, id int) []v1.PeerConfig {
	ring := f.rings[k]
	m := len(ring)
	if m < 2 {
		return nil
	}
	pos := int(f.position[id*f.plan.Rails+k.rail])
	offsets := f.peerOffsets(m)
	out := make([]v1.PeerConfig, 0, len(offsets))
	for _, d := range offsets {
		peer := ring[(pos+d)%m]
		a := f.addrs[peer*f.plan.Rails+k.rail]
		out = append(out, v1.PeerConfig{Node: f.plan.Nodes[peer].Name, Rail: k.rail, IPv4: a[0], IPv6: a[1]})
	}
	return out
}

// Derive computes every node's NodeConfig from a plan, by node name, with
// Generation 0 (the store sets it).
func Derive(p v1.FabricPlan) (map[string]v1.NodeConfig, error) {
	f, err := NewFabric(p)
	if err != nil {
		return nil, err
	}
	out := make(map[string]v1.NodeConfig, len(f.ids))
	for n := range f.ids {
		out[n], _ = f.Config(n)
	}
	return out, nil
}

// Changed lists, sorted, the nodes whose config differs between two
// derivations (generation aside), including nodes only in one of them.
func Changed(old, new map[string]v1.NodeConfig) []string {
	var out []string
	for n, c := range new {
		o, ok := old[n]
		c.Generation, o.Generation = 0, 0
		if !ok || !reflect.DeepEqual(o, c) {
			out = append(out, n)
		}
	}
	for n := range old {
		if _, ok := new[n]; !ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ChangedNodes lists, sorted, the nodes whose config differs between two
// fabrics, deriving only the candidates: every node when node-wide
// settings or the node set changed, else the members of every tenant
// ring (tenant and rail) whose members or tenant changed; in a ring
// larger than max_peers+1 at both ends, only the members that joined or
// left and those whose max_peers/2 nearest on either side changed.
func ChangedNodes(old, new *Fabric) []string {
	out, _ := ChangedConfigs(old, new)
	return out
}

// ChangedConfigs is ChangedNodes, with the new configs of the nodes that
// changed (those still in new).
func ChangedConfigs(old, new *Fabric) ([]string, map[string]v1.NodeConfig) {
	var cands map[string]bool
	if old == nil || new == nil || !sameGlobals(old.plan, new.plan) || !sameNodes(old, new) {
		cands = map[string]bool{}
		for _, f := range []*Fabric{old, new} {
			if f != nil {
				for n := range f.ids {
					cands[n] = true
				}
			}
		}
	} else {
		cands = ringCandidates(old, new)
	}
	var out []string
	configs := map[string]v1.NodeConfig{}
	for n := range cands {
		var a, b v1.NodeConfig
		var okA, okB bool
		if old != nil {
			a, okA = old.Config(n)
		}
		if new != nil {
			b, okB = new.Config(n)
		}
		if okA != okB || !reflect.DeepEqual(a, b) {
			out = append(out, n)
			if okB {
				configs[n] = b
			}
		}
	}
	sort.Strings(out)
	return out, configs
}

// sameNodes reports whether two fabrics have the same nodes (name, index
// and cabling), in any order.
func sameNodes(a, b *Fabric) bool {
	if len(a.plan.Nodes) != len(b.plan.Nodes) {
		return false
	}
	if slices.EqualFunc(a.plan.Nodes, b.plan.Nodes, samePlanNode) {
		return true
	}
	for _, n := range b.plan.Nodes {
		if i, ok := a.ids[n.Name]; !ok || !samePlanNode(a.plan.Nodes[i], n) {
			return false
		}
	}
	return true
}

func samePlanNode(a, b v1.PlanNode) bool {
	return a.Name == b.Name && a.Index == b.Index && slices.Equal(a.Cabling, b.Cabling)
}

// sameIndexes reports whether two node lists have the same names and
// indexes in the same order (the address table depends on nothing else).
func sameIndexes(a, b []v1.PlanNode) bool {
	return slices.EqualFunc(a, b, func(x, y v1.PlanNode) bool { return x.Name == y.Name && x.Index == y.Index })
}

func sameGlobals(a, b v1.FabricPlan) bool {
	return a.Rails == b.Rails && reflect.DeepEqual(a.Link, b.Link) && reflect.DeepEqual(a.Addressing, b.Addressing) &&
		reflect.DeepEqual(a.QoS, b.QoS) && a.Probes == b.Probes
}

// ringCandidates are the members, old and new, of every ring that differs
// (by tenant identity, VRF, VNI and member list) whose config can change
// (ringChanges).
func ringCandidates(old, new *Fabric) map[string]bool {
	type ringID struct {
		tenant v1.TenantConfig
		rail   int
	}
	collect := func(f *Fabric) map[ringID][]string {
		out := make(map[ringID][]string, len(f.rings))
		for k, ring := range f.rings {
			t := f.plan.Tenants[k.tenant]
			names := make([]string, len(ring))
			for i, id := range ring {
				names[i] = f.plan.Nodes[id].Name
			}
			out[ringID{v1.TenantConfig{ID: t.ID, VRF: t.VRF, VNI: t.VNI}, k.rail}] = names
		}
		return out
	}
	a, b := collect(old), collect(new)
	cands := map[string]bool{}
	add := func(ring []string) {
		for _, n := range ring {
			cands[n] = true
		}
	}
	for id, ring := range a {
		if !slices.Equal(ring, b[id]) {
			ringChanges(ring, b[id], new.plan.Probes.MaxPeers, cands)
		}
	}
	for id, ring := range b {
		if _, ok := a[id]; !ok {
			add(ring)
		}
	}
	return cands
}

// ringChanges adds to cands the members of a ring, before (a) and after
// (b), whose peers on that rail can differ. While the ring has at most
// max_peers+1 members, at either end, every member peers with every
// other: all of them. Otherwise a member peers with the max_peers/2
// nearest on each side (peerOffsets): the members that joined or left,
// and those whose neighbours within that distance are not the same.
func ringChanges(a, b []string, maxPeers int, cands map[string]bool) {
	if len(a)-1 <= maxPeers || len(b)-1 <= maxPeers {
		for _, r := range [][]string{a, b} {
			for _, n := range r {
				cands[n] = true
			}
		}
		return
	}
	h := max(maxPeers/2, 1)
	posA := make(map[string]int, len(a))
	for i, n := range a {
		posA[n] = i
	}
	inB := make(map[string]bool, len(b))
	for pb, n := range b {
		inB[n] = true
		pa, ok := posA[n]
		if !ok {
			cands[n] = true
			continue
		}
		for d := 1; d <= h; d++ {
			if a[(pa+d)%len(a)] != b[(pb+d)%len(b)] || a[(pa-d+len(a))%len(a)] != b[(pb-d+len(b))%len(b)] {
				cands[n] = true
				break
			}
		}
	}
	for _, n := range a {
		if !inB[n] {
			cands[n] = true
		}
	}
}

// ApplyMove returns the plan with the move done; p is not modified. The
// GPUs (all of the node's when none are named) of the node, or of each of
// the nodes, leave every tenant and join m.Tenant ("" leaves them in none).
func ApplyMove(p v1.FabricPlan, m v1.Move) (v1.FabricPlan, error) {
	out, err := ApplyMoveUnchecked(p, m)
	if err != nil {
		return out, err
	}
	return out, CheckPlan(out)
}

// ApplyMoveUnchecked is ApplyMove without the check of the whole plan
// (NewFabric does it).
func ApplyMoveUnchecked(p v1.FabricPlan, m v1.Move) (v1.FabricPlan, error) {
	p = Defaults(p)
	nodes, err := moveNodes(p, m)
	if err != nil {
		return p, err
	}
	dest := -1
	for i, t := range p.Tenants {
		if t.ID == m.Tenant {
			dest = i
		}
	}
	if m.Tenant != "" && dest < 0 {
		return p, &NotFoundError{What: "tenant " + m.Tenant}
	}
	gpus := map[int]bool{}
	for k, g := range m.GPUs {
		if g < 0 || g >= p.Rails {
			return p, &FieldError{Field: fmt.Sprintf("gpus[%d]", k), Reason: fmt.Sprintf("%d is outside 0-%d", g, p.Rails-1)}
		}
		if gpus[g] {
			return p, &FieldError{Field: fmt.Sprintf("gpus[%d]", k), Reason: fmt.Sprintf("GPU %d is listed twice", g)}
		}
		gpus[g] = true
	}
	whole := len(m.GPUs) == 0
	moving := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		moving[n] = true
	}
	out := clonePlan(p)
	// Out of every tenant.
	for i := range out.Tenants {
		t := &out.Tenants[i]
		members := t.Members[:0]
		for _, mem := range t.Members {
			if moving[mem.Node] {
				if whole {
					continue
				}
				var keep []int
				for _, g := range memberGPUs(mem, p.Rails) {
					if !gpus[g] {
						keep = append(keep, g)
					}
				}
				if len(keep) == 0 {
					continue
				}
				mem.GPUs = keep
			}
			members = append(members, mem)
		}
		t.Members = members
	}
	if dest < 0 {
		return out, nil
	}
	// Into the destination: merged with what the node has there already.
	t := &out.Tenants[dest]
	var add []int
	if !whole {
		add = slices.Sorted(mapsKeys(gpus))
	}
	at := make(map[string]int, len(t.Members))
	for j, mem := range t.Members {
		at[mem.Node] = j
	}
	for _, n := range nodes {
		j, ok := at[n]
		if !ok {
			g := slices.Clone(add)
			if len(g) == p.Rails {
				g = nil // the whole node
			}
			t.Members = append(t.Members, v1.TenantMember{Node: n, GPUs: g})
			continue
		}
		if whole {
			t.Members[j].GPUs = nil
			continue
		}
		g := append(slices.Clone(t.Members[j].GPUs), add...)
		slices.Sort(g)
		if len(g) == p.Rails {
			g = nil
		}
		t.Members[j].GPUs = g
	}
	return out, nil
}

// moveNodes are the nodes a move names: node, or nodes (exactly one of
// them), each a node of the plan, once.
func moveNodes(p v1.FabricPlan, m v1.Move) ([]string, error) {
	switch {
	case m.Node == "" && len(m.Nodes) == 0:
		return nil, &FieldError{Field: "node", Reason: "required (or nodes)"}
	case m.Node != "" && len(m.Nodes) > 0:
		return nil, &FieldError{Field: "nodes", Reason: "set together with node: name one node, or several in nodes"}
	}
	names, field := m.Nodes, "nodes"
	if m.Node != "" {
		names, field = []string{m.Node}, "node"
	}
	known := make(map[string]bool, len(p.Nodes))
	for _, n := range p.Nodes {
		known[n.Name] = true
	}
	seen := make(map[string]int, len(names))
	for i, n := range names {
		f := field
		if field == "nodes" {
			f = fmt.Sprintf("nodes[%d]", i)
		}
		if !ValidNodeName(n) {
			return nil, &FieldError{Field: f, Reason: fmt.Sprintf("%s is not a node name", v1.Clip(n))}
		}
		if j, dup := seen[n]; dup {
			return nil, &FieldError{Field: f, Reason: fmt.Sprintf("%s is also nodes[%d]", n, j)}
		}
		seen[n] = i
		if !known[n] {
			return nil, &NotFoundError{What: "node " + n}
		}
	}
	return names, nil
}

func mapsKeys(m map[int]bool) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// PutTenant returns the plan with the tenant created or replaced; p is
// not modified. A GPU another tenant has is a *ConflictError, a member that
// is not a node of the plan a *FieldError.
func PutTenant(p v1.FabricPlan, t v1.Tenant) (v1.FabricPlan, error) {
	out, err := PutTenantUnchecked(p, t)
	if err != nil {
		return out, err
	}
	return out, CheckPlan(out)
}

// PutTenantUnchecked is PutTenant without the check of the whole plan (NewFabric
// does it).
func PutTenantUnchecked(p v1.FabricPlan, t v1.Tenant) (v1.FabricPlan, error) {
	p = Defaults(p)
	names := make(map[string]int, len(p.Nodes))
	for i, n := range p.Nodes {
		names[n.Name] = i
	}
	if errs := tenantProblems(t, "", p.Rails, names); len(errs) > 0 {
		for _, e := range errs {
			var fe *FieldError
			if errors.As(e, &fe) {
				fe.Field = strings.TrimPrefix(fe.Field, ".")
			}
		}
		return p, errors.Join(errs...)
	}
	mine := make(map[string]struct{}, len(t.Members))
	for _, m := range t.Members {
		mine[m.Node] = struct{}{}
	}
	out := clonePlan(p)
	replaced := false
	for i := range out.Tenants {
		if out.Tenants[i].ID == t.ID {
			out.Tenants[i] = cloneTenant(t)
			replaced = true
			continue
		}
		other := out.Tenants[i]
		if other.VRF == t.VRF {
			return p, &ConflictError{Reason: fmt.Sprintf("vrf %q is tenant %s's", t.VRF, other.ID)}
		}
		if other.VNI == t.VNI {
			return p, &ConflictError{Reason: fmt.Sprintf("vni %d is tenant %s's", t.VNI, other.ID)}
		}
		have := map[gpuKey]bool{}
		for _, m := range other.Members {
			if _, ok := mine[m.Node]; !ok {
				continue
			}
			for _, g := range memberGPUs(m, p.Rails) {
				have[gpuKey{m.Node, g}] = true
			}
		}
		for j, m := range t.Members {
			for _, g := range memberGPUs(m, p.Rails) {
				if have[gpuKey{m.Node, g}] {
					return p, &ConflictError{Reason: fmt.Sprintf("members[%d]: GPU %d of %s is tenant %s's; move it first (POST /v1/moves)", j, g, m.Node, other.ID)}
				}
			}
		}
	}
	if !replaced {
		out.Tenants = append(out.Tenants, cloneTenant(t))
	}
	return out, nil
}

func cloneTenant(t v1.Tenant) v1.Tenant {
	t.Members = slices.Clone(t.Members)
	for i := range t.Members {
		t.Members[i].GPUs = slices.Clone(t.Members[i].GPUs)
	}
	return t
}

// clonePlan copies a plan deeply enough that changing tenants and members
// of the copy leaves the original alone.
func clonePlan(p v1.FabricPlan) v1.FabricPlan {
	out := p
	out.Nodes = slices.Clone(p.Nodes)
	for i := range out.Nodes {
		out.Nodes[i].Cabling = slices.Clone(out.Nodes[i].Cabling)
	}
	out.Tenants = make([]v1.Tenant, len(p.Tenants))
	for i, t := range p.Tenants {
		out.Tenants[i] = cloneTenant(t)
	}
	return out
}
