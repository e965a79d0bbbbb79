package diag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/nic/lldp"
	"github.com/roce-agent/roce-agent/probe"
)

// Cabling checks: the rails' LLDP neighbours against the plan
// (nic/lldp.CheckCabling, the daemon's CablingOK).

// DefaultLLDPListen is how long diag listens for LLDP frames by default
// (Env.LLDPListen): leaves send one every 30s by default.
const DefaultLLDPListen = 35 * time.Second

// maxLLDPListen bounds Env.LLDPListen (the command refuses more).
const maxLLDPListen = 5 * time.Minute

func init() {
	register(
		Check{
			ID: "LLDP-CABLE-001", Title: "rail reaches the planned leaf port",
			Doc: "Reads each rail's LLDP neighbour (lldpd's `lldpctl -f json`, else the running daemon's /v1/status, else by listening for LLDP frames on the rails as root, for `--lldp-listen` (35s; 0 does not listen)) " +
				"and compares it with the leaf (LLDP system name) and port (port ID or description) the desired state plans for the rail (`rails[].leaf`, `rails[].leaf_port`, from the controller's plan `nodes[].cabling`). A rail cabled elsewhere fails, naming what it reaches and which rail that port is planned for (two rails swapped).",
			Remedy:  "recable the rail to the planned leaf port (swap the two cables when two rails look swapped), or correct the plan's cabling; check with `lldpctl` on the host and the leaf's LLDP neighbour table",
			Run:     checkCablingPlanned,
			Timeout: maxLLDPListen + 10*time.Second,
		},
		Check{
			ID: "LLDP-CABLE-002", Title: "no two rails on the same leaf port",
			Doc: "Two rails whose LLDP neighbour is the same leaf chassis and port are cabled to one port (through a patch panel or a switch that forwards LLDP), " +
				"and a rail that sees several neighbours has something between it and the leaf. Rails of a host on one leaf are fine, on distinct ports.",
			Remedy:  "trace both cables: each rail must reach its own leaf port directly; remove whatever between the NIC and the leaf forwards LLDP",
			Run:     checkCablingShared,
			Timeout: maxLLDPListen + 10*time.Second,
		},
	)
}

// lldpView is the rails' neighbours as one run of diag reads them once
// for both checks.
type lldpView struct {
	once  sync.Once
	in    []lldp.RailInput
	subj  []string // the rails' subjects, by input
	from  string   // where the neighbours came from
	whole []Result // the node's result when no rail could be read
}

// lldpNeighbours reads the rails' neighbours once per run: both cabling
// checks judge the same reading.
func lldpNeighbours(ctx context.Context, e *Env) *lldpView {
	view := &e.cabling
	view.once.Do(func() { view.read(ctx, e) })
	return view
}

func (v *lldpView) read(ctx context.Context, e *Env) {
	rails := e.Rails()
	if len(rails) == 0 {
		v.whole = noRails(e)
		return
	}
	if e.Config.LLDP.Source == lldp.SourceOff {
		v.whole = []Result{SkipResult("node", "lldp.source is off: the cabling check is disabled")}
		return
	}
	if !e.Live && e.Node == nil {
		v.whole = []Result{SkipResult("node", errNoKernel.Error())}
		return
	}
	planned := map[int]v1.RailConfig{}
	if e.Desired {
		for _, rc := range e.Config.Rails {
			if rc.Rail != nil {
				planned[*rc.Rail] = rc
			}
		}
	}
	var netdevs []string
	for _, r := range rails {
		v.in = append(v.in, lldp.RailInput{Rail: r.Rail, Netdev: r.Netdev, Leaf: planned[r.Rail].Leaf, Port: planned[r.Rail].LeafPort})
		v.subj = append(v.subj, railSubject(r.Netdev, r.RDMADevice))
		if r.Netdev != "" {
			netdevs = append(netdevs, r.Netdev)
		}
	}
	var why []string
	// lldpd, when it answers.
	if e.Config.LLDP.Source != lldp.SourceListen {
		runner := e.Runner
		if runner == nil {
			runner = lldpNoRunner{}
		}
		got, _ := (&lldp.Reader{Runner: runner, Socket: e.Config.LLDP.Socket, Source: lldp.SourceLldpctl}).Read(ctx, netdevs)
		var down error
		for _, res := range got {
			if res.Err != nil && (errors.Is(res.Err, probe.ErrToolMissing) || errors.Is(res.Err, lldp.ErrLldpdDown)) {
				down = res.Err
			}
		}
		if down == nil {
			v.fill(got, "lldpctl")
			return
		}
		why = append(why, down.Error())
	}
	// The running daemon's view.
	got, err := lldpFromDaemon(ctx, e, netdevs)
	if err == nil {
		v.fill(got, "the daemon's /v1/status")
		return
	}
	why = append(why, err.Error())
	// Listening, as root on the live host.
	switch {
	case e.Config.LLDP.Source == lldp.SourceLldpctl:
		why = append(why, "lldp.source is lldpctl: diag does not listen for frames")
	case !e.Live && e.Node == nil:
		v.whole = []Result{SkipResult("node", "no LLDP neighbours to check: "+strings.Join(why, "; ")+"; the inventory is a sysfs tree, so diag does not listen on the rails")}
		return
	case !e.Privileged:
		v.whole = []Result{PrivilegeResult("node", "no LLDP neighbours to check: "+strings.Join(why, "; ")+"; listening for LLDP frames on the rails needs root (CAP_NET_RAW)")}
		return
	case e.LLDPListen <= 0:
		v.whole = []Result{UnknownResult("node", "no LLDP neighbours to check: "+strings.Join(why, "; ")+"; listening for LLDP frames is off (--lldp-listen 0)")}
		return
	default:
		wait := min(e.LLDPListen, maxLLDPListen)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl)-2*time.Second < wait {
			wait = max(time.Until(dl)-2*time.Second, time.Second)
		}
		got := make(map[string]lldp.Result, len(netdevs))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, dev := range netdevs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := lldp.Listen(ctx, dev, wait)
				res := lldp.Result{Err: err}
				if err == nil {
					res = lldp.Result{Neighbor: &n}
				}
				mu.Lock()
				got[dev] = res
				mu.Unlock()
			}()
		}
		wg.Wait()
		v.fill(got, fmt.Sprintf("LLDP frames (listened %s)", wait))
		return
	}
	v.whole = []Result{UnknownResult("node", "no LLDP neighbours to check: "+strings.Join(why, "; "))}
}

func (v *lldpView) fill(got map[string]lldp.Result, from string) {
	v.from = from
	for i := range v.in {
		if v.in[i].Netdev == "" {
			v.in[i].Err = errors.New("the rail has no netdev")
			continue
		}
		res := got[v.in[i].Netdev]
		v.in[i].Neighbor, v.in[i].Err = res.Neighbor, res.Err
	}
}

// lldpNoRunner is the runner of an Env without one: no tool is there.
type lldpNoRunner struct{}

func (lldpNoRunner) Start(context.Context, probe.Command) (probe.Process, error) {
	return nil, probe.ErrToolMissing
}

// lldpFromDaemon reads the rails' LLDP neighbours from the running
// daemon's /v1/status; an error says why there are none.
func lldpFromDaemon(ctx context.Context, e *Env, netdevs []string) (map[string]lldp.Result, error) {
	listen := e.Config.Listen.Metrics
	if listen == "" {
		return nil, errors.New("the daemon serves no /v1/status (listen.metrics is empty)")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen.metrics %s: %w", v1.Clip(listen), err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	client := e.HTTP
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext, DisableKeepAlives: true}}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/v1/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	req.Header.Set("User-Agent", "roce-agent-diag")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon not reachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon: GET %s: HTTP %d", url, resp.StatusCode)
	}
	var st v1.NodeStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("daemon: GET %s: decode: %w", url, err)
	}
	byDev := map[string]*v1.LLDPNeighbor{}
	for _, rs := range st.Rails {
		if rs.LLDP != nil {
			byDev[rs.Netdev] = rs.LLDP
		}
	}
	if len(byDev) == 0 {
		return nil, errors.New("the daemon knows no LLDP neighbour of any rail")
	}
	out := make(map[string]lldp.Result, len(netdevs))
	for _, dev := range netdevs {
		n, ok := byDev[dev]
		if !ok {
			out[dev] = lldp.Result{Err: fmt.Errorf("the daemon knows %w on %s", lldp.ErrNoNeighbor, dev)}
			continue
		}
		out[dev] = lldp.Result{Neighbor: &lldp.Neighbor{ChassisID: n.ChassisID, SysName: n.SysName, PortID: n.PortID, PortDescr: n.PortDescr, Source: n.Source, Seen: n.Seen}}
	}
	return out, nil
}

func checkCablingPlanned(ctx context.Context, e *Env) []Result {
	v := lldpNeighbours(ctx, e)
	if v.whole != nil {
		return v.whole
	}
	verdicts := lldp.CheckCabling(v.in)
	var out []Result
	for i, in := range v.in {
		res, subj := verdicts[i], v.subj[i]
		n := in.Neighbor
		want := in.Leaf
		if in.Port != "" {
			want += " port " + in.Port
		}
		switch {
		case in.Leaf == "":
			why := "no leaf is planned for the rail (rails[].leaf)"
			if !e.Desired {
				why = "no desired state: no leaf is planned for the rail"
			}
			r := SkipResult(subj, why+"; LLDP-CABLE-002 still checks that it has a port of its own")
			if n != nil {
				r.Observed = n.String()
			}
			out = append(out, r.OnRail(in.Rail))
		case n == nil:
			out = append(out, UnknownResult(subj, res.Message+" (read from "+v.from+")").OnRail(in.Rail))
		case res.Status == v1.StatusTrue:
			out = append(out, PassResult(subj, n.String()).OnRail(in.Rail))
		case res.Reason == lldp.ReasonSharedPort && n.IsLeaf(in.Leaf) && (in.Port == "" || n.HasPort(in.Port)):
			out = append(out, PassResult(subj, n.String()).With("the planned port, which another rail reaches too (LLDP-CABLE-002)").OnRail(in.Rail))
		case res.Reason == lldp.ReasonSharedPort:
			out = append(out, FailResult(subj, n.String(), want, fmt.Sprintf("rail %d reaches %s, not the planned %s (read from %s)", in.Rail, n, want, v.from)).OnRail(in.Rail))
		default:
			out = append(out, FailResult(subj, n.String(), want, res.Message+" (read from "+v.from+")").OnRail(in.Rail))
		}
	}
	return out
}

func checkCablingShared(ctx context.Context, e *Env) []Result {
	v := lldpNeighbours(ctx, e)
	if v.whole != nil {
		return v.whole
	}
	verdicts := lldp.CheckCabling(v.in)
	var out []Result
	for i, in := range v.in {
		res, subj := verdicts[i], v.subj[i]
		n := in.Neighbor
		switch {
		case n == nil:
			out = append(out, UnknownResult(subj, res.Message+" (read from "+v.from+")").OnRail(in.Rail))
		case res.Reason == lldp.ReasonSharedPort || res.Reason == lldp.ReasonMultipleNeighbors:
			out = append(out, FailResult(subj, n.String(), "a leaf port of its own", res.Message+" (read from "+v.from+")").OnRail(in.Rail))
		default:
			out = append(out, PassResult(subj, n.String()).OnRail(in.Rail))
		}
	}
	return out
}
