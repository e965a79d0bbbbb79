package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic/nettest"
)

// BenchmarkDaemonFootprint runs the built daemon on an 8-rail lab,
// converged and idle, and reports its resident memory and CPU use over a
// minute (ROCE_BENCH_IDLE overrides the minute).
func BenchmarkDaemonFootprint(b *testing.B) {
	nettest.RequireRoot(b)
	bin := binaryB(b)
	idle := time.Minute
	if v := os.Getenv("ROCE_BENCH_IDLE"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			idle = d
		}
	}
	for i := 0; i < b.N; i++ {
		lab := nettest.NewLab(b, 8)
		cfg := labConfigB(b, b.TempDir(), "listen: {metrics: \"127.0.0.1:19487\"}\n")
		sd := nettest.NewSystemd(b)
		cmd := exec.Command("ip", "netns", "exec", lab.Host.Name, bin, "--config", cfg, "--log-level", "warn", "run")
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sd.Socket)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for start := time.Now(); sd.Count("READY=1") == 0; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				b.Fatal("no READY=1")
			}
		}
		time.Sleep(2 * time.Second) // let start-up settle
		pid := cmd.Process.Pid
		t0, c0 := time.Now(), cpuTicks(b, pid)
		time.Sleep(idle)
		t1, c1 := time.Now(), cpuTicks(b, pid)
		rss := rssKB(b, pid)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		const hz = 100 // USER_HZ
		cpu := float64(c1-c0) / hz / t1.Sub(t0).Seconds() * 100
		b.ReportMetric(float64(rss)/1024, "rss-MB")
		b.ReportMetric(cpu, "idle-cpu-%")
		b.ReportMetric(0, "ns/op")
	}
}

func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

func rssKB(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
