package diag

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/roce-agent/roce-agent/qos"
)

// Counter checks: error counters sampled twice, Env.Sample apart. A
// counter that rises during the window is a fault happening now; one that
// is non-zero but flat is history (it counts since the NIC's last reset).

// counterTimeout bounds a sampling check: the default 3 s window, the
// reads before and after it, and room to spare. A longer --sample is
// shortened to fit (sampleWindow), and the report says so.
const counterTimeout = 10 * time.Second

// pfcStormRate is the pause frame rate on one priority, in frames per
// second averaged over the window, that CNT-PFC-001 calls a storm. A
// priority held paused without a break takes a pause frame every half
// quantum: about 3,000/s at 100 Gb/s and 24,000/s at 400 Gb/s; congestion
// that resolves itself stays well below 1,000/s over seconds.
const pfcStormRate = 1000

// pfcSteps is how many intervals CNT-PFC-001 splits its window into, to
// tell pauses sent without a break from bursts.
const pfcSteps = 5

func init() {
	register(
		Check{
			ID: "CNT-LINK-001", Title: "no link errors rising",
			Doc: "Samples each rail port's PMA error counters (`/sys/class/infiniband/<dev>/ports/<n>/counters/`: symbol_error, link_downed, link_error_recovery, port_rcv_errors, local_link_integrity_errors, excessive_buffer_overrun_errors, port_xmit_discards) twice, `--sample` apart. " +
				"Symbol errors, link downs or retraining rising now mean a failing optic, cable or port that drops RoCE packets (FAIL); receive errors and discards rising are a WARN; non-zero counters that do not move are history and pass.",
			Remedy:  "reseat or replace the optic or cable (clean the fibre ends), check the leaf port's error counters and FEC mode against the NIC's (`ethtool --show-fec <netdev>`), and move the link to another leaf port to tell the NIC from the switch; `mlxlink -d <dev> -c` shows the BER and FEC state",
			Run:     checkLinkErrors,
			Timeout: counterTimeout,
		},
		Check{
			ID: "CNT-ROCE-001", Title: "no RoCE transport errors rising",
			Doc: "Samples each rail port's RDMA transport counters (`ports/<n>/hw_counters/`: out_of_sequence, packet_seq_err, implied_nak_seq_err, roce_adp_retrans, roce_slow_restart, rnr_nak_retry_err, req_cqe_error, resp_cqe_error, local_ack_timeout_err; rxe's out_of_seq_request, rcvd_seq_err, completer_retry_err, retry_exceeded_err) twice, `--sample` apart. " +
				"Out-of-sequence packets and retransmissions rising mean packets are lost on a fabric that should be lossless (WARN); ACK timeouts and exhausted retries rising break queue pairs and fail jobs (FAIL).",
			Remedy:  "loss on a lossless class: check that PFC is on for the RoCE priority end to end (QOS-* checks, the leaf's PFC and buffer settings), that ECN/DCQCN is on (CNP counters np_cnp_sent and rp_cnp_handled should move under load), and the link (CNT-LINK-001); timeouts that persist point at a dead path or peer: run the probes (`roce-agent probe`)",
			Run:     checkRoCEErrors,
			Timeout: counterTimeout,
		},
		Check{
			ID: "CNT-PFC-001", Title: "no PFC pause storm",
			Doc: "Samples each rail netdev's PFC pause frame counters per priority over dcbnl (ieee_pfc requests = sent, indications = received) across the `--sample` window, in five steps. " +
				"1000 or more pause frames per second on a priority is a storm (WARN); a NIC that sends them at that rate without a break for the whole window cannot drain its receive buffers and stops the priority for every sender behind the leaf (FAIL). " +
				"Where `ethtool -S` shows the NIC's stall prevention counters (mlx5: tx_pause_storm_warning_events, tx_pause_storm_error_events), they are sampled too: a warning event in the window is a WARN, an error event (the NIC paused past pfc-prevention-tout and stopped pausing, so the priority lost its lossless guarantee) a FAIL; events only before the window are history and pass.",
			Remedy:  "pauses sent by the NIC: the host cannot drain what it receives (check PCIe errors and width, GPUDirect and peer memory, CPU and interrupt load, a stuck receive queue) and turn on the NIC's pause storm prevention (`ethtool --set-tunable <netdev> pfc-prevention-tout 100`); pauses received: find the congested or storming port downstream on the leaf (its PFC watchdog, buffer and ECN thresholds)",
			Run:     checkPFCStorm,
			Timeout: counterTimeout,
		},
	)
}

// notApplicable is a read that found nothing to sample (no PMA counters
// on rxe, no dcbnl on a veth): its subject is skipped for this reason.
type notApplicable string

func (n notApplicable) Error() string { return string(n) }

// sampleTarget is one subject whose counters a check samples.
type sampleTarget struct {
	rail    int
	subject string
	// read returns the counters now, by name; a notApplicable error skips
	// the subject.
	read func() (map[string]uint64, error)
}

// sampled is a target's readings across the window: reads[0] before it,
// one more after each step. err is why the subject could not be sampled.
type sampled struct {
	sampleTarget
	reads []map[string]uint64
	err   error
}

// first and last are the readings at the window's ends.
func (s *sampled) first() map[string]uint64 { return s.reads[0] }
func (s *sampled) last() map[string]uint64  { return s.reads[len(s.reads)-1] }

// result turns a target that could not be sampled into its result.
func (s *sampled) result() Result {
	var na notApplicable
	switch {
	case errors.As(s.err, &na):
		return SkipResult(s.subject, string(na)).OnRail(s.rail)
	case errors.Is(s.err, fs.ErrPermission):
		return PrivilegeResult(s.subject, s.err.Error()).OnRail(s.rail)
	}
	return UnknownResult(s.subject, s.err.Error()).OnRail(s.rail)
}

// sampleMargin is the time a sampling check keeps for its reads after the
// window.
const sampleMargin = 2 * time.Second

// sampleWindow is Env.Sample, shortened to end sampleMargin before ctx's
// deadline.
func sampleWindow(ctx context.Context, e *Env) time.Duration {
	w := e.Sample
	if w <= 0 {
		w = 3 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) - sampleMargin; left < w {
			w = max(left, time.Millisecond)
		}
	}
	return w
}

// sampleCounters reads every target, waits the window (in steps equal
// parts, reading every target after each) and returns the readings and
// the window. The targets are read together, so a check waits one window
// whatever the number of rails; the counter checks each sample on their
// own, and run in parallel. A target whose read fails is not read again;
// without any target to read, nothing waits.
// The error is ctx's when it ended during the window.
func sampleCounters(ctx context.Context, e *Env, targets []sampleTarget, steps int) ([]sampled, time.Duration, error) {
	if steps < 1 {
		steps = 1
	}
	window := sampleWindow(ctx, e)
	out := make([]sampled, len(targets))
	for i, t := range targets {
		out[i].sampleTarget = t
		m, err := t.read()
		out[i].err = err
		if err == nil {
			out[i].reads = []map[string]uint64{m}
		}
	}
	readable := false
	for i := range out {
		readable = readable || out[i].err == nil
	}
	for step := 0; readable && step < steps; step++ {
		if err := e.Wait(ctx, window/time.Duration(steps)); err != nil {
			return nil, window, fmt.Errorf("sampling interrupted: %w", err)
		}
		for i := range out {
			s := &out[i]
			if s.err != nil {
				continue
			}
			m, err := s.read()
			if err != nil {
				var na notApplicable
				if errors.As(err, &na) {
					err = fmt.Errorf("%s vanished during the window: %w", s.subject, err)
				}
				s.err, s.reads = err, nil
				continue
			}
			for name := range s.first() {
				if _, ok := m[name]; !ok {
					s.err = fmt.Errorf("%s vanished during the window", name)
				}
			}
			if s.err != nil {
				s.reads = nil
				continue
			}
			s.reads = append(s.reads, m)
		}
	}
	return out, window, nil
}

// counterDelta is how much a counter rose from before to after. A second
// reading below the first is a 32-bit counter that wrapped (mlx5 q
// counters are 32-bit in firmware) when the first fits in 32 bits, else a
// reset; the agent's metrics unwrap the same way.
func counterDelta(before, after uint64) uint64 {
	switch {
	case after >= before:
		return after - before
	case before <= math.MaxUint32:
		return after + (1 << 32) - before
	}
	return after
}

// sampleInterrupted is the result of every subject when the window was cut
// short.
func sampleInterrupted(targets []sampleTarget, err error) []Result {
	var out []Result
	for _, t := range targets {
		out = append(out, UnknownResult(t.subject, err.Error()).OnRail(t.rail))
	}
	return out
}

// portCounterTargets are the rails' RDMA ports, each read for the named
// counters of its dir ("counters" for PMA, "hw_counters"); a port without
// dir or without any of the names is skipped with absent's reason. The
// results are the rails with nothing to read.
func portCounterTargets(e *Env, dir string, names []string, absent string) ([]sampleTarget, []Result) {
	rails := e.Rails()
	if len(rails) == 0 {
		return nil, noRails(e)
	}
	if e.FS == nil {
		return nil, []Result{UnknownResult("node", "no sysfs tree to read")}
	}
	var targets []sampleTarget
	var out []Result
	for _, r := range rails {
		n := e.RailNIC(r)
		subject := railSubject(r.Netdev, r.RDMADevice)
		switch {
		case r.Missing != "" || n == nil:
			out = append(out, SkipResult(subject, "the rail has no NIC (NIC-PORT-001)").OnRail(r.Rail))
			continue
		case n.RDMADevice == "":
			out = append(out, SkipResult(subject, "the rail's NIC has no RDMA device").OnRail(r.Rail))
			continue
		}
		dev, port := n.RDMADevice, n.Port.Port
		if port <= 0 {
			port = 1
		}
		base := path.Join("/class/infiniband", dev, "ports", strconv.Itoa(port), dir)
		targets = append(targets, sampleTarget{rail: r.Rail, subject: subject, read: func() (map[string]uint64, error) {
			return readPortCounters(e, base, names, fmt.Sprintf("%s port %d has no %s", dev, port, absent))
		}})
	}
	return targets, out
}

// readPortCounters reads the named counters in the sysfs directory base;
// a counter the driver does not have is left out, and without any the
// port is skipped for absent.
func readPortCounters(e *Env, base string, names []string, absent string) (map[string]uint64, error) {
	if !e.FS.Exists(base) {
		return nil, notApplicable(absent)
	}
	m := make(map[string]uint64, len(names))
	for _, name := range names {
		p := base + "/" + name
		s, err := e.FS.ReadString(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s holds %q, not a counter", e.FS.HostPath(p), garbageText(s))
		}
		m[name] = v
	}
	if len(m) == 0 {
		return nil, notApplicable(absent + " (none of " + strings.Join(names, ", ") + ")")
	}
	return m, nil
}

// garbageText shortens garbage read from a file for a message.
func garbageText(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// counterRule says what one counter rising means.
type counterRule struct {
	status Status // Warn or Fail
	means  string
}

// judgeCounters is a sampled port's verdict: each counter that rose, worst
// first; else a pass that names the non-zero totals as history. names
// orders the counters in the text.
func judgeCounters(s *sampled, window time.Duration, names []string, rules map[string]counterRule, expected string) Result {
	first, last := s.first(), s.last()
	status := Pass
	var rose, totals, means []string
	seen := map[string]bool{}
	for _, name := range names {
		before, ok := first[name]
		if !ok {
			continue
		}
		after := last[name]
		if after != 0 {
			totals = append(totals, fmt.Sprintf("%s %d", name, after))
		}
		d := counterDelta(before, after)
		if d == 0 {
			continue
		}
		rule := rules[name]
		rose = append(rose, fmt.Sprintf("%s +%d", name, d))
		if rule.status.Rank() > status.Rank() {
			status = rule.status
		}
		if !seen[rule.means] {
			seen[rule.means] = true
			means = append(means, rule.means)
		}
	}
	if status != Pass {
		observed := strings.Join(rose, ", ") + " in " + window.String()
		reason := "rising during the window: " + strings.Join(means, "; ")
		r := WarnResult(s.subject, observed, expected, reason)
		if status == Fail {
			r = FailResult(s.subject, observed, expected, reason)
		}
		return r.OnRail(s.rail)
	}
	if len(totals) == 0 {
		return PassResult(s.subject, fmt.Sprintf("%d counters at 0, none rose in %s", len(first), window)).OnRail(s.rail)
	}
	return PassResult(s.subject, strings.Join(totals, ", ")+"; none rose in "+window.String()).OnRail(s.rail).
		With("historic errors: counted before the window (since the NIC's last reset), not rising now")
}

// linkCounters are the PMA error counters of CNT-LINK-001, in report
// order.
var linkCounters = []string{"symbol_error", "link_downed", "link_error_recovery", "port_rcv_errors",
	"local_link_integrity_errors", "excessive_buffer_overrun_errors", "port_xmit_discards"}

var linkRules = map[string]counterRule{
	"symbol_error":                    {Fail, "symbol errors are bit errors on the wire (a dirty or failing optic or cable, a FEC mismatch)"},
	"link_downed":                     {Fail, "the link went down (flapping)"},
	"link_error_recovery":             {Fail, "the link retrained after errors"},
	"port_rcv_errors":                 {Warn, "received packets were dropped as malformed or corrupt"},
	"local_link_integrity_errors":     {Warn, "the local link integrity threshold was passed"},
	"excessive_buffer_overrun_errors": {Warn, "receive buffers overran"},
	"port_xmit_discards":              {Warn, "the port discarded packets it could not send"},
}

func checkLinkErrors(ctx context.Context, e *Env) []Result {
	return checkCounterSet(ctx, e, "counters", linkCounters, linkRules, "PMA counters (counters/): its driver has none (rxe)", "no link error counter rising")
}

// checkCounterSet samples the named counters of dir on every rail port
// and judges each port by rules.
func checkCounterSet(ctx context.Context, e *Env, dir string, names []string, rules map[string]counterRule, absent, quiet string) []Result {
	targets, out := portCounterTargets(e, dir, names, absent)
	if len(targets) == 0 {
		return out
	}
	samples, window, err := sampleCounters(ctx, e, targets, 1)
	if err != nil {
		return append(out, sampleInterrupted(targets, err)...)
	}
	for i := range samples {
		s := &samples[i]
		if s.err != nil {
			out = append(out, s.result())
			continue
		}
		out = append(out, judgeCounters(s, window, names, rules, quiet))
	}
	return railOrdered(out)
}

// roceCounters are the hw_counters of CNT-ROCE-001, mlx5's then rxe's.
var roceCounters = []string{"local_ack_timeout_err", "retry_exceeded_err", "out_of_sequence", "packet_seq_err",
	"implied_nak_seq_err", "roce_adp_retrans", "roce_slow_restart", "rnr_nak_retry_err", "req_cqe_error",
	"resp_cqe_error", "out_of_seq_request", "rcvd_seq_err", "completer_retry_err"}

const (
	meansLoss    = "out-of-sequence packets and NAKs: packets lost on the fabric (PFC not lossless, or a bad link)"
	meansRetrans = "retransmissions: packets lost or late on the fabric (PFC not lossless, or a bad link)"
	meansTimeout = "transport timeouts: peers did not acknowledge within the QP timeout, so queue pairs fail (loss without recovery, a dead path or peer)"
)

var roceRules = map[string]counterRule{
	"local_ack_timeout_err": {Fail, meansTimeout},
	"retry_exceeded_err":    {Fail, meansTimeout},
	"out_of_sequence":       {Warn, meansLoss},
	"packet_seq_err":        {Warn, meansLoss},
	"implied_nak_seq_err":   {Warn, meansLoss},
	"out_of_seq_request":    {Warn, meansLoss},
	"rcvd_seq_err":          {Warn, meansLoss},
	"roce_adp_retrans":      {Warn, meansRetrans},
	"roce_slow_restart":     {Warn, meansRetrans},
	"completer_retry_err":   {Warn, meansRetrans},
	"rnr_nak_retry_err":     {Warn, "receiver-not-ready retries ran out (a receiver posts its buffers too slowly)"},
	"req_cqe_error":         {Warn, "work requests completed in error"},
	"resp_cqe_error":        {Warn, "work requests completed in error"},
}

func checkRoCEErrors(ctx context.Context, e *Env) []Result {
	return checkCounterSet(ctx, e, "hw_counters", roceCounters, roceRules, "transport counters (hw_counters/): its driver exports none", "no transport error counter rising")
}

// railOrdered orders results by rail (node results first), keeping the
// order within a rail.
func railOrdered(rs []Result) []Result {
	sort.SliceStable(rs, func(i, j int) bool {
		ri, rj := -1, -1
		if rs[i].Rail != nil {
			ri = *rs[i].Rail
		}
		if rs[j].Rail != nil {
			rj = *rs[j].Rail
		}
		return ri < rj
	})
	return rs
}

// pfcKey names a priority's pause counter in a PFC sample: "tx3", "rx3".
func pfcKey(dir string, prio int) string { return dir + strconv.Itoa(prio) }

func checkPFCStorm(ctx context.Context, e *Env) []Result {
	rails := e.Rails()
	if len(rails) == 0 {
		return noRails(e)
	}
	if e.Node == nil {
		why := "diag has no access to the rails' namespace (netlink, dcbnl)"
		if e.NodeErr != nil {
			why += ": " + e.NodeErr.Error()
		}
		return []Result{SkipResult("node", why)}
	}
	dcb := e.Node.DCB()
	if dcb == nil {
		return []Result{SkipResult("node", "dcbnl could not be opened in the rails' namespace: no PFC counters")}
	}
	var out []Result
	var targets []sampleTarget
	enabled := map[string]uint8{} // by subject: the PFC enable bits of the first reading
	for _, r := range rails {
		subject := railSubject(r.Netdev, r.RDMADevice)
		if r.Netdev == "" {
			out = append(out, SkipResult(subject, "the rail has no netdev").OnRail(r.Rail))
			continue
		}
		dev := r.Netdev
		targets = append(targets, sampleTarget{rail: r.Rail, subject: subject, read: func() (map[string]uint64, error) {
			m, enable, err := readPFC(dcb, dev)
			if err == nil {
				if _, ok := enabled[subject]; !ok {
					enabled[subject] = enable
				}
				addStallEvents(ctx, e, dev, m)
			}
			return m, err
		}})
	}
	if len(targets) == 0 {
		return out
	}
	samples, window, err := sampleCounters(ctx, e, targets, pfcSteps)
	if err != nil {
		return append(out, sampleInterrupted(targets, err)...)
	}
	for i := range samples {
		s := &samples[i]
		if s.err != nil {
			out = append(out, s.result())
			continue
		}
		out = append(out, judgePFC(s, window, enabled[s.subject]))
	}
	return railOrdered(out)
}

// readPFC reads a netdev's PFC pause counters per priority ("tx0".."rx7")
// and enable bits over dcbnl.
func readPFC(dcb qos.DCBClient, dev string) (map[string]uint64, uint8, error) {
	ieee, err := dcb.IEEE(dev)
	switch {
	case errors.Is(err, qos.ErrUnsupported):
		return nil, 0, notApplicable(dev + " has no dcbnl (a VF, veth or rxe): no PFC counters")
	case errors.Is(err, qos.ErrNoDevice):
		return nil, 0, notApplicable(dev + " is not in the rails' namespace")
	case err != nil:
		return nil, 0, fmt.Errorf("dcbnl ieee %s: %w", dev, err)
	case ieee.PFC == nil:
		return nil, 0, notApplicable(dev + "'s driver reports no PFC state over dcbnl (no ieee_getpfc)")
	}
	m := make(map[string]uint64, 16)
	for p := 0; p < 8; p++ {
		m[pfcKey("tx", p)] = ieee.PFC.Requests[p]
		m[pfcKey("rx", p)] = ieee.PFC.Indications[p]
	}
	return m, ieee.PFC.Enable, nil
}

// The NIC's PFC stall prevention counters in a PFC sample (mlx5's
// ethtool statistics): how often it paused longer than the storm warning
// threshold, and how often longer than pfc-prevention-tout, after which
// it stops sending pause frames.
const (
	stormWarningKey = "storm_warning"
	stormErrorKey   = "storm_error"
)

// addStallEvents adds the NIC's stall prevention counters to a PFC
// sample, where `ethtool -S` shows them (mlx5 with stall detection);
// elsewhere it adds nothing.
func addStallEvents(ctx context.Context, e *Env, dev string, m map[string]uint64) {
	if e.Runner == nil {
		return
	}
	res, err := e.RunTool(ctx, 3*time.Second, "ethtool", "-S", dev)
	if err != nil || res.TimedOut || res.ExitCode != 0 {
		return
	}
	st := parseEthtoolStats(res.Stdout)
	if v, ok := st["tx_pause_storm_warning_events"]; ok {
		m[stormWarningKey] = v
	}
	if v, ok := st["tx_pause_storm_error_events"]; ok {
		m[stormErrorKey] = v
	}
}

// parseEthtoolStats reads `ethtool -S` output: "NIC statistics:", then
// one "name: value" per line. Names are trimmed (some mlx5 versions end
// tx_pause_storm_warning_events with a space); lines that are not a name
// and an unsigned number are skipped.
func parseEthtoolStats(out string) map[string]uint64 {
	m := map[string]uint64{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if name == "" || err != nil {
			continue
		}
		m[name] = v
	}
	return m
}

// judgePFC is a netdev's pause verdict: per priority, the rate of pause
// frames sent (tx) and received (rx) over the window, and whether tx rose
// in every step; then the NIC's stall prevention events, where it counts
// them.
func judgePFC(s *sampled, window time.Duration, enable uint8) Result {
	secs := max(window.Seconds(), 1e-3)
	status := Pass
	var seen, reasons []string
	raise := func(st Status, why string) {
		if st.Rank() > status.Rank() {
			status = st
		}
		reasons = append(reasons, why)
	}
	for p := 0; p < 8; p++ {
		tx := counterDelta(s.first()[pfcKey("tx", p)], s.last()[pfcKey("tx", p)])
		rx := counterDelta(s.first()[pfcKey("rx", p)], s.last()[pfcKey("rx", p)])
		if tx == 0 && rx == 0 {
			continue
		}
		txRate, rxRate := float64(tx)/secs, float64(rx)/secs
		seen = append(seen, fmt.Sprintf("prio %d: tx %.0f/s, rx %.0f/s", p, txRate, rxRate))
		steady := true // tx rose in every step
		for i := 1; i < len(s.reads); i++ {
			if counterDelta(s.reads[i-1][pfcKey("tx", p)], s.reads[i][pfcKey("tx", p)]) == 0 {
				steady = false
			}
		}
		switch {
		case txRate >= pfcStormRate && steady:
			raise(Fail, fmt.Sprintf("priority %d: the NIC sent pause frames without a break for the whole window: the host cannot drain what it receives, and the leaf stops the priority for every sender behind it", p))
		case txRate >= pfcStormRate:
			raise(Warn, fmt.Sprintf("priority %d: the NIC sends pause frames at a storm rate: the host falls behind draining what it receives", p))
		}
		if rxRate >= pfcStormRate {
			raise(Warn, fmt.Sprintf("priority %d: the leaf pauses this NIC at a storm rate: congestion or a pause storm downstream", p))
		}
	}
	var history string // stall prevention events before the window, none in it
	if _, ok := s.first()[stormWarningKey]; ok {
		warnings := counterDelta(s.first()[stormWarningKey], s.last()[stormWarningKey])
		errs := counterDelta(s.first()[stormErrorKey], s.last()[stormErrorKey])
		if warnings > 0 || errs > 0 {
			seen = append(seen, fmt.Sprintf("stall prevention: %d warning and %d error events", warnings, errs))
		}
		switch {
		case errs > 0:
			raise(Fail, fmt.Sprintf("the NIC paused longer than its pfc-prevention-tout %d times in the window (tx_pause_storm_error_events) and then stopped sending pause frames: the priority is not lossless while that lasts, and the host cannot drain what it receives", errs))
		case warnings > 0:
			raise(Warn, fmt.Sprintf("the NIC paused longer than its storm warning threshold %d times in the window (tx_pause_storm_warning_events): the host falls behind draining what it receives", warnings))
		}
		if total := s.last()[stormWarningKey] + s.last()[stormErrorKey]; warnings == 0 && errs == 0 && total > 0 {
			history = fmt.Sprintf("; stall prevention events since the driver loaded: %d warning, %d error, none in the window",
				s.last()[stormWarningKey], s.last()[stormErrorKey])
		}
	}
	enabled := pfcPriorities(enable)
	if len(seen) == 0 {
		return PassResult(s.subject, fmt.Sprintf("no pause frames in %s (PFC on %s)%s", window, enabled, history)).OnRail(s.rail)
	}
	observed := strings.Join(seen, "; ") + " over " + window.String()
	expected := fmt.Sprintf("below %d pause frames/s per priority", pfcStormRate)
	switch status {
	case Fail:
		return FailResult(s.subject, observed, expected, strings.Join(reasons, "; ")).OnRail(s.rail)
	case Warn:
		return WarnResult(s.subject, observed, expected, strings.Join(reasons, "; ")).OnRail(s.rail)
	}
	return PassResult(s.subject, observed+" (PFC on "+enabled+")"+history).OnRail(s.rail)
}

// pfcPriorities names the priorities with PFC on: "priorities 3, 4", "no
// priority".
func pfcPriorities(enable uint8) string {
	var ps []string
	for p := 0; p < 8; p++ {
		if enable&(1<<p) != 0 {
			ps = append(ps, strconv.Itoa(p))
		}
	}
	switch len(ps) {
	case 0:
		return "no priority"
	case 1:
		return "priority " + ps[0]
	}
	return "priorities " + strings.Join(ps, ", ")
}
