package linkengine

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// The link engine's speed goals (design.md section 9), measured against
// the alternatives in the same run. Run with `make bench`.

func nsenter(ns *nettest.NS, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns.Name}, args...)...)
}

// planFor returns the commands that converge a clean lab, split into ip
// commands and sysctl assignments.
func planFor(b *testing.B, lab *nettest.Lab, rails []RailLink) (ip4, ip6, sysctls []string, all []string) {
	b.Helper()
	host, err := OpenHost(lab.Host.Handle)
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close()
	eng := &Engine{Host: host, StateDir: b.TempDir(), Range: TableRange{1000, 1000, 256}}
	plan, err := eng.Plan(rails)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range plan.Changes {
		all = append(all, c.Command)
		// ip -batch takes no options per line: IPv6 commands go to a
		// second batch run with -6.
		switch {
		case c.Kind == SysctlSet:
			sysctls = append(sysctls, strings.TrimPrefix(c.Command, "sysctl -w "))
		case strings.HasPrefix(c.Command, "ip -6 "):
			ip6 = append(ip6, strings.TrimPrefix(c.Command, "ip -6 "))
		default:
			ip4 = append(ip4, strings.TrimPrefix(c.Command, "ip "))
		}
	}
	return ip4, ip6, sysctls, all
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// BenchmarkApplyFromClean applies 8 rails (v4+v6 addresses, MTU, up, rules,
// routes, sysctls) to a fresh lab three ways: the engine, the same changes
// as a shell script of iproute2/sysctl commands (one process each), and
// `ip -batch` plus one sysctl process (the practical floor). Each way gets
// its own fresh lab per iteration; lab setup is not timed.
func BenchmarkApplyFromClean(b *testing.B) {
	nettest.RequireRoot(b)
	rails := labRails(8)
	var agent, shell, batch []time.Duration
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		lab := nettest.NewLab(b, 8)
		host, err := OpenHost(lab.Host.Handle)
		if err != nil {
			b.Fatal(err)
		}
		eng := &Engine{Host: host, StateDir: b.TempDir(), Range: TableRange{1000, 1000, 256}}
		b.StartTimer()
		start := time.Now()
		res, err := eng.Reconcile(rails)
		agent = append(agent, time.Since(start))
		b.StopTimer()
		host.Close()
		if err != nil || !res.Converged() {
			b.Fatalf("engine: %v %v", err, res.Err())
		}

		lab2 := nettest.NewLab(b, 8)
		ip4, ip6, sysctls, all := planFor(b, lab2, rails)
		script := filepath.Join(dir, "apply.sh")
		if err := os.WriteFile(script, []byte("set -e\n"+strings.Join(all, "\n")+"\n"), 0o755); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if out, err := nsenter(lab2.Host, "sh", script).CombinedOutput(); err != nil {
			b.Fatalf("shell script: %v\n%s", err, out)
		}
		shell = append(shell, time.Since(start))

		lab3 := nettest.NewLab(b, 8)
		batch4, batch6 := filepath.Join(dir, "apply4.batch"), filepath.Join(dir, "apply6.batch")
		if err := os.WriteFile(batch4, []byte(strings.Join(ip4, "\n")+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(batch6, []byte(strings.Join(ip6, "\n")+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if out, err := nsenter(lab3.Host, append([]string{"sysctl", "-q", "-w"}, sysctls...)...).CombinedOutput(); err != nil {
			b.Fatalf("sysctl: %v\n%s", err, out)
		}
		if out, err := exec.Command("ip", "-n", lab3.Host.Name, "-batch", batch4).CombinedOutput(); err != nil {
			b.Fatalf("ip -batch: %v\n%s", err, out)
		}
		if out, err := exec.Command("ip", "-n", lab3.Host.Name, "-6", "-batch", batch6).CombinedOutput(); err != nil {
			b.Fatalf("ip -6 -batch: %v\n%s", err, out)
		}
		batch = append(batch, time.Since(start))
		b.StartTimer()
	}
	b.StopTimer()
	a, s, f := median(agent), median(shell), median(batch)
	b.ReportMetric(ms(a), "agent-ms")
	b.ReportMetric(ms(s), "shell-ms")
	b.ReportMetric(ms(f), "ipbatch-ms")
	b.ReportMetric(float64(s)/float64(a), "shell/agent-x")
	b.ReportMetric(float64(a)/float64(f), "agent/ipbatch-x")
	b.ReportMetric(0, "ns/op")
}

// convergedLab is an 8-rail lab the engine has converged.
func convergedLab(b *testing.B) (*nettest.Lab, *Host, *Engine, []RailLink) {
	b.Helper()
	nettest.RequireRoot(b)
	lab := nettest.NewLab(b, 8)
	host, err := OpenHost(lab.Host.Handle)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(host.Close)
	eng := &Engine{Host: host, StateDir: b.TempDir(), Range: TableRange{1000, 1000, 256}}
	rails := labRails(8)
	if res, err := eng.Reconcile(rails); err != nil || !res.Converged() {
		b.Fatal(err, res.Err())
	}
	return lab, host, eng, rails
}

// BenchmarkApplyConverged is a reconcile of 8 converged rails: it must send
// no write. It runs ten reconciles per iteration and reports the median.
func BenchmarkApplyConverged(b *testing.B) {
	_, _, eng, rails := convergedLab(b)
	// Warm up, and let the kernel finish tearing down the namespaces of
	// earlier benchmarks, which runs on the same two cores.
	for i := 0; i < 200; i++ {
		if _, err := eng.Reconcile(rails); err != nil {
			b.Fatal(err)
		}
	}
	writes := 0
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N*10; i++ {
		start := time.Now()
		res, err := eng.Reconcile(rails)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		writes += res.Writes
	}
	b.StopTimer()
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
	b.ReportMetric(ms(median(lat)), "median-ms")
}

// BenchmarkDriftRepair deletes an owned address by hand (netlink, as `ip
// address del` does) and times from the kernel's RTM_DELADDR event to the
// end of the reconcile that restores it.
func BenchmarkDriftRepair(b *testing.B) {
	lab, _, eng, rails := convergedLab(b)
	done := make(chan struct{})
	defer close(done)
	updates := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{Namespace: &lab.Host.Handle}); err != nil {
		b.Fatal(err)
	}
	link, err := lab.Host.NL.LinkByName("rail3")
	if err != nil {
		b.Fatal(err)
	}
	victim := &netlink.Addr{IPNet: nettest.ParseCIDR(nettest.HostIPv4(3))}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := lab.Host.NL.AddrDel(link, victim); err != nil {
			b.Fatal(err)
		}
		for u := range updates {
			if !u.NewAddr && u.LinkAddress.IP.Equal(victim.IP) {
				break
			}
		}
		t0 := time.Now()
		res, err := eng.Reconcile(rails)
		lat = append(lat, time.Since(t0))
		if err != nil || res.Drift[AddrAdd] != 1 {
			b.Fatalf("repair: %v drift %v", err, res.Drift)
		}
		// Drain the events the repair caused.
		for drained := false; !drained; {
			select {
			case <-updates:
			case <-time.After(5 * time.Millisecond):
				drained = true
			}
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
