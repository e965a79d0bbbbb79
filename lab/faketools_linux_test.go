package lab

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/sysfstest"
	"github.com/roce-agent/roce-agent/probe"
)

// TestFakeTools runs the lab's fake ib_write_bw, ib_write_lat and rping
// in a host's namespace as the agent does (the probe package's command
// lines, its bare environment): within the tenant they print output the
// probe parsers accept; to another tenant's rail, or from a GID that is
// not a RoCE v2 GID of the rail, they fail with the real tools' own
// failure lines; servers exit 0 at once.
func TestFakeTools(t *testing.T) {
	f := newTestLab(t, Options{})
	configureHosts(t, f)
	dir := filepath.Join(f.WorkDir(), "tools-gpu-00")
	if err := WriteFakeTools(dir, f.SysfsRoot(0)); err != nil {
		t.Fatal(err)
	}
	fs, err := nic.NewFS(f.SysfsRoot(0))
	if err != nil {
		t.Fatal(err)
	}
	const rail = 0
	dev, netdev := sysfstest.DGXRDMADevice(rail), f.Netdevs(0)[rail]
	self, member, outsider := f.Rail(0, rail), f.Rail(2, rail), f.Rail(1, rail) // tenant-a, tenant-a, tenant-b
	binding := func(family string) probe.Binding {
		a := self.HostIPv4.Addr()
		if family == probe.FamilyIPv6 {
			a = self.HostIPv6.Addr()
		}
		gid, err := fs.GIDIndex(dev, 1, a, netdev)
		if err != nil {
			t.Fatalf("GID of %s on %s: %v", a, dev, err)
		}
		return probe.Binding{Device: dev, Port: 1, GIDIndex: gid, Addr: a}
	}
	// the fakes stand for a perftest that binds its out-of-band socket
	modern := probe.Perftest{BindSourceIP: true}
	run := func(c probe.Command) probe.Output {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", self.HostNS, filepath.Join(dir, c.Name)}, c.Args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		err := cmd.Run()
		out := probe.Output{Stdout: stdout.String(), Stderr: stderr.String(), Duration: time.Since(t0)}
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("%s: %v", c, err)
			}
			out.ExitCode = ee.ExitCode()
		}
		return out
	}
	type test struct {
		tool, family string
	}
	tests := []test{
		{"ib_write_bw", probe.FamilyIPv4}, {"ib_write_bw", probe.FamilyIPv6},
		{"ib_write_lat", probe.FamilyIPv4}, {"ib_write_lat", probe.FamilyIPv6},
		{"rping", probe.FamilyIPv4}, {"rping", probe.FamilyIPv6},
	}
	parse := func(tt test, o probe.Output) error {
		switch tt.tool {
		case "ib_write_bw":
			_, err := probe.ParseBandwidth(o.Stdout, o.Stderr)
			return err
		case "ib_write_lat":
			_, err := probe.ParseLatency(o.Stdout, o.Stderr)
			return err
		}
		_, err := probe.ParseRping(o.Stdout, o.Stderr, o.ExitCode, 7)
		return err
	}
	for _, tt := range tests {
		pt := probe.Test{Tool: tt.tool, Family: tt.family}
		if tt.tool == "rping" {
			pt.Count = 7
		}
		b := binding(tt.family)
		peerAddr := func(r RailInfo) probe.Command {
			peer := r.HostIPv4.Addr()
			if tt.family == probe.FamilyIPv6 {
				peer = r.HostIPv6.Addr()
			}
			return probe.ClientCommand(pt, b, peer, self.HostIPv4.Addr(), r.HostIPv4.Addr(), 18515, -1, modern)
		}
		name := tt.tool + " " + tt.family
		// A server: exits 0 at once.
		if o := run(probe.ServerCommand(pt, b, 18515, -1)); o.ExitCode != 0 || o.Duration > 5*time.Second {
			t.Errorf("%s server: exit %d after %s: %s", name, o.ExitCode, o.Duration, o.Stderr)
		}
		// Within the tenant: the capture, which the parser takes.
		c := peerAddr(member)
		o := run(c)
		if o.ExitCode != 0 {
			t.Errorf("%s to %s (same tenant): exit %d: %s", name, member.Node, o.ExitCode, o.Stderr)
		} else if err := parse(tt, o); err != nil {
			t.Errorf("%s to %s: the parser refuses the output: %v", name, member.Node, err)
		}
		// Across tenants: the real tool's failure, which the parser names.
		c = peerAddr(outsider)
		o = run(c)
		err := parse(tt, o)
		if o.ExitCode == 0 || err == nil {
			t.Errorf("%s to %s (tenant-b): exit %d, parse error %v", name, outsider.Node, o.ExitCode, err)
		} else if want := map[string]string{"rping": "cma event"}[tt.tool]; want == "" && !strings.Contains(err.Error(), "Couldn't connect to "+outsider.HostIPv4.Addr().String()+":18515") ||
			want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("%s to %s: %v", name, outsider.Node, err)
		}
	}
	// A GID index that is not a RoCE v2 GID of the rail (index 0: the
	// link-local RoCE v1 entry) fails the client.
	bad := probe.ClientCommand(probe.Test{Tool: "ib_write_bw", Family: probe.FamilyIPv4},
		probe.Binding{Device: dev, Port: 1, GIDIndex: 0, Addr: self.HostIPv4.Addr()}, member.HostIPv4.Addr(), self.HostIPv4.Addr(), member.HostIPv4.Addr(), 18515, -1, modern)
	if o := run(bad); o.ExitCode == 0 {
		t.Errorf("%s: exit 0 from the RoCE v1 GID 0", bad)
	}
	// perftest's --bind_source_ip is where the out-of-band exchange
	// leaves from: another rail's address does not reach the peer, and
	// neither does the main routing table (no source, or an old
	// perftest's --source_ip, which binds nothing).
	other := f.Rail(0, 1).HostIPv4.Addr()
	for _, c := range []probe.Command{
		probe.ClientCommand(probe.Test{Tool: "ib_write_lat", Family: probe.FamilyIPv4}, binding(probe.FamilyIPv4), member.HostIPv4.Addr(), other, member.HostIPv4.Addr(), 18515, -1, modern),
		probe.ClientCommand(probe.Test{Tool: "ib_write_lat", Family: probe.FamilyIPv4}, binding(probe.FamilyIPv4), member.HostIPv4.Addr(), netip.Addr{}, member.HostIPv4.Addr(), 18515, -1, modern),
		probe.ClientCommand(probe.Test{Tool: "ib_write_lat", Family: probe.FamilyIPv4}, binding(probe.FamilyIPv4), member.HostIPv4.Addr(), self.HostIPv4.Addr(), member.HostIPv4.Addr(), 18515, -1, probe.Perftest{}),
	} {
		if o := run(c); o.ExitCode == 0 || !strings.Contains(o.Stderr, "Couldn't connect to") {
			t.Errorf("%s: exit %d, %q", c, o.ExitCode, o.Stderr)
		}
	}
	// the fakes are a modern perftest: their --help names --bind_source_ip
	for _, tool := range []string{"ib_write_bw", "ib_write_lat"} {
		o := run(probe.Command{Name: tool, Args: []string{"--help"}})
		if !probe.ParsePerftestHelp(o.Stdout+o.Stderr).BindSourceIP || !strings.Contains(o.Stdout, "Usage:") {
			t.Errorf("%s --help: %q", tool, o.Stdout)
		}
	}
	for _, tool := range FakeTools {
		if st, err := os.Stat(filepath.Join(dir, tool)); err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("%s: not an executable (%v)", tool, err)
		}
	}
}
