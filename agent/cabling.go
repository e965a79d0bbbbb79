package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/lldp"
	"github.com/roce-agent/roce-agent/probe"
)

// LLDPConfig is the cabling check's settings (lldp.*): where the rails'
// LLDP neighbours come from and how often they are read.
type LLDPConfig struct {
	// Source is "auto" (lldpctl when lldpd answers, else listening for
	// LLDP frames on each rail), "lldpctl", "listen" or "off" (no check,
	// no CablingOK condition).
	Source string `mapstructure:"source"`
	// Socket is lldpd's control socket, lldpctl's -u ("": lldpd's
	// default).
	Socket string `mapstructure:"socket"`
	// Interval is how often the neighbours are read and checked.
	Interval time.Duration `mapstructure:"interval"`
}

// DefaultLLDPConfig is lldp.* with nothing set.
func DefaultLLDPConfig() LLDPConfig {
	return LLDPConfig{Source: lldp.SourceAuto, Interval: 30 * time.Second}
}

// problems names every invalid lldp setting.
func (l LLDPConfig) problems() []error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("lldp.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !slices.Contains(lldp.Sources, l.Source) {
		fail("source", "%s is not one of %s", v1.Clip(l.Source), strings.Join(lldp.Sources, ", "))
	}
	if s := l.Socket; s != "" {
		switch {
		case len(s) > 107:
			fail("socket", "%s is longer than 107 bytes (a unix socket path)", v1.Clip(s))
		case !filepath.IsAbs(s):
			fail("socket", "%s is not an absolute path", v1.Clip(s))
		case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }):
			fail("socket", "%s has control characters", v1.Clip(s))
		}
	}
	if l.Interval < 5*time.Second || l.Interval > time.Hour {
		fail("interval", "%s is outside 5s-1h", l.Interval)
	}
	return errs
}

// cablingCheck reads the rails' LLDP neighbours every lldp.interval, in
// the background (a reconcile never waits for it), and cross-checks them
// with the rails' planned leaf and port (lldp.CheckCabling). Status()
// adds its verdicts as each rail's CablingOK condition and LLDP
// neighbour.
type cablingCheck struct {
	config func() Config
	// rails are the rails of the last status (number and netdev).
	rails func() []RailStatus
	// do runs fn in the rails' namespace (listening sockets).
	do func(fn func() error) error
	// runner runs lldpctl (nil: probe.ExecRunner{}).
	runner probe.Runner
	// changed says the verdicts changed (the reporter sends the status).
	changed func()
	log     *slog.Logger

	mu      sync.Mutex
	source  string // the lldp.source of the last check ("" none yet)
	verdict map[int]cablingVerdict
	conds   map[int]conditionSet
}

// cablingVerdict is a rail's last check.
type cablingVerdict struct {
	netdev   string
	cond     Condition
	neighbor *v1.LLDPNeighbor
}

func newCablingCheck(d *Daemon) *cablingCheck {
	changed := func() {}
	if d.opts.Reporter != nil {
		changed = d.opts.Reporter.StatusChanged
	}
	return &cablingCheck{
		config: d.node.Config, rails: d.statusRails, do: d.node.host.Do, changed: changed, log: d.log,
	}
}

// statusRails are the rails of the last reconcile's status.
func (d *Daemon) statusRails() []RailStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status == nil {
		return nil
	}
	return d.status.Rails
}

// start runs the check until ctx ends; the returned function stops it
// and waits.
func (c *cablingCheck) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx)
	}()
	return func() { cancel(); <-done }
}

func (c *cablingCheck) run(ctx context.Context) {
	var reader *lldp.Reader
	var readerCfg LLDPConfig
	defer func() {
		if reader != nil {
			reader.Close()
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg := c.config().LLDP
		if reader != nil && readerCfg != cfg {
			reader.Close()
			reader = nil
		}
		next := cfg.Interval
		if next <= 0 {
			next = DefaultLLDPConfig().Interval
		}
		switch {
		case cfg.Source == lldp.SourceOff:
			c.clear()
		case len(c.rails()) == 0:
			next = time.Second // no reconcile yet
		default:
			if reader == nil {
				reader, readerCfg = c.newReader(cfg), cfg
			}
			c.check(ctx, reader)
		}
		t.Reset(next)
	}
}

func (c *cablingCheck) newReader(cfg LLDPConfig) *lldp.Reader {
	return &lldp.Reader{Runner: c.runner, Socket: cfg.Socket, Source: cfg.Source, Do: c.do}
}

// clear forgets the verdicts (lldp.source off).
func (c *cablingCheck) clear() {
	c.mu.Lock()
	had := len(c.verdict) > 0
	c.source, c.verdict, c.conds = lldp.SourceOff, nil, nil
	c.mu.Unlock()
	if had {
		c.changed()
	}
}

// check reads the neighbours once and records the verdicts.
func (c *cablingCheck) check(ctx context.Context, reader *lldp.Reader) {
	cfg := c.config()
	rails := c.rails()
	netdevs := make([]string, 0, len(rails))
	for _, r := range rails {
		if r.Netdev != "" {
			netdevs = append(netdevs, r.Netdev)
		}
	}
	got, src := reader.Read(ctx, netdevs)
	planned := map[int]RailConfig{}
	for _, rc := range cfg.Rails {
		if rc.Rail != nil {
			planned[*rc.Rail] = rc
		}
	}
	in := make([]lldp.RailInput, 0, len(rails))
	for _, r := range rails {
		ri := lldp.RailInput{Rail: r.Rail, Netdev: r.Netdev, Leaf: planned[r.Rail].Leaf, Port: planned[r.Rail].LeafPort}
		if r.Netdev == "" {
			ri.Err = fmt.Errorf("the rail has no netdev")
		} else {
			ri.Neighbor, ri.Err = got[r.Netdev].Neighbor, got[r.Netdev].Err
		}
		in = append(in, ri)
	}
	out := lldp.CheckCabling(in)
	now := time.Now()
	changed := false
	c.mu.Lock()
	if c.conds == nil {
		c.conds = map[int]conditionSet{}
	}
	verdict := make(map[int]cablingVerdict, len(out))
	for i, res := range out {
		cs := c.conds[res.Rail]
		if cs == nil {
			cs = conditionSet{}
			c.conds[res.Rail] = cs
		}
		cond := cs.set(v1.ConditionCablingOK, now, Condition{Type: v1.ConditionCablingOK, Status: res.Status, Reason: res.Reason, Message: res.Message})
		v := cablingVerdict{netdev: res.Netdev, cond: cond}
		if n := in[i].Neighbor; n != nil {
			v.neighbor = n.API()
		}
		old, had := c.verdict[res.Rail]
		if !had || old.cond.Status != cond.Status || old.cond.Reason != cond.Reason || old.cond.Message != cond.Message || !sameNeighbor(old.neighbor, v.neighbor) {
			changed = true
			if !had || old.cond.Status != cond.Status {
				level := slog.LevelInfo
				if cond.Status == StatusFalse {
					level = slog.LevelWarn
				}
				c.log.Log(ctx, level, "cabling check", "rail", res.Rail, "netdev", res.Netdev, "status", cond.Status, "reason", cond.Reason, "message", cond.Message, "source", src)
			}
		}
		verdict[res.Rail] = v
	}
	for rail := range c.conds {
		if _, ok := verdict[rail]; !ok {
			delete(c.conds, rail)
		}
	}
	changed = changed || len(verdict) != len(c.verdict)
	c.source, c.verdict = src, verdict
	c.mu.Unlock()
	if changed {
		c.changed()
	}
}

func sameNeighbor(a, b *v1.LLDPNeighbor) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ChassisID == b.ChassisID && a.SysName == b.SysName && a.PortID == b.PortID && a.PortDescr == b.PortDescr && a.Source == b.Source
}

// apply adds each rail's CablingOK condition and LLDP neighbour to a
// status whose Rails the caller may change (a copy): the last verdict
// for the rail's netdev, else Unknown NotChecked until the first check.
// With lldp.source off it adds nothing.
func (c *cablingCheck) apply(st *NodeStatus) {
	if c.config().LLDP.Source == lldp.SourceOff {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.source == lldp.SourceOff {
		return
	}
	for i := range st.Rails {
		rs := &st.Rails[i]
		v, ok := c.verdict[rs.Rail]
		cond := v.cond
		if !ok || v.netdev != rs.Netdev {
			cond = Condition{Type: v1.ConditionCablingOK, Status: StatusUnknown, Reason: "NotChecked",
				Message: "the rail's LLDP neighbour has not been read yet (lldp.interval)"}
			v.neighbor = nil
		}
		rs.Conditions = append(slices.Clip(rs.Conditions), cond)
		if v.neighbor != nil {
			n := *v.neighbor
			rs.LLDP = &n
		}
	}
}

var (
	descCablingOK = desc("rail_cabling_ok", "Whether the rail reaches the planned leaf port and no other rail reaches it (condition CablingOK): 1 True, 0 False, -1 Unknown (no LLDP neighbour, not checked yet).", "rail", "netdev")
	descLLDP      = desc("rail_lldp_neighbor_info", "The rail's LLDP neighbour (the leaf port it is cabled to); always 1.", "rail", "netdev", "chassis_id", "sys_name", "port_id")
)

// cablingPart renders the rails' CablingOK conditions and LLDP
// neighbours from the status.
type cablingPart struct{}

func (cablingPart) name() string { return "" }

func (cablingPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	for _, rs := range st.Rails {
		rail := strconv.Itoa(rs.Rail)
		for _, cond := range rs.Conditions {
			if cond.Type == v1.ConditionCablingOK {
				gauge(ch, descCablingOK, statusValue(cond.Status), rail, rs.Netdev)
			}
		}
		if n := rs.LLDP; n != nil {
			gauge(ch, descLLDP, 1, rail, rs.Netdev, n.ChassisID, n.SysName, n.PortID)
		}
	}
	return nil
}
