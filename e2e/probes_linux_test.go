package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/lab"
)

// pairKey is a directed rail pair of a tenant's probe matrix.
type pairKey struct {
	node     string
	rail     int
	peerNode string
	peerRail int
}

func (k pairKey) String() string {
	return fmt.Sprintf("%s/%d->%s/%d", k.node, k.rail, k.peerNode, k.peerRail)
}

// wantPairs is every directed pair of a tenant's member rails the lab's
// leaves put in the tenant now: the same rail of two of its hosts.
func wantPairs(f *lab.Fabric, tenant string) map[pairKey]bool {
	out := map[pairKey]bool{}
	for a := 0; a < f.Hosts(); a++ {
		for b := 0; b < f.Hosts(); b++ {
			for r := 0; r < f.Rails(); r++ {
				if a != b && f.Rail(a, r).Tenant == tenant && f.Rail(b, r).Tenant == tenant {
					out[pairKey{f.Node(a), r, f.Node(b), r}] = true
				}
			}
		}
	}
	return out
}

// checkPairs says what is wrong with a tenant's pair matrix ("" when
// nothing): a pair that is not one of the tenant's (crossing tenants or
// rails), a pair not OK, pairs_ok or pairs_total off; with complete,
// also a pair of the tenant missing.
func checkPairs(f *lab.Fabric, th v1.TenantHealth, complete bool) string {
	want := wantPairs(f, th.Tenant)
	got := map[pairKey]bool{}
	ok := 0
	for _, p := range th.Pairs {
		k := pairKey{p.Node, p.Rail, p.PeerNode, p.PeerRail}
		if !want[k] {
			return fmt.Sprintf("%s: pair %s is not one of the tenant's", th.Tenant, k)
		}
		got[k] = true
		if !p.OK {
			return fmt.Sprintf("%s: pair %s not OK: %+v", th.Tenant, k, p.Results)
		}
		ok++
	}
	switch {
	case th.PairsTotal != len(th.Pairs) || th.PairsOK != ok:
		return fmt.Sprintf("%s: pairs_ok %d, pairs_total %d for %d pairs, %d OK", th.Tenant, th.PairsOK, th.PairsTotal, len(th.Pairs), ok)
	case th.PairsTotal == 0:
		return th.Tenant + ": no pair yet"
	}
	var missing []string
	probers := map[string]bool{}
	for k := range got {
		probers[k.node] = true
	}
	for k := range want {
		if !got[k] && (complete || !probers[k.node]) {
			missing = append(missing, k.String())
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Sprintf("%s: %d of %d pairs, missing %s", th.Tenant, len(got), len(want), strings.Join(firstOf(missing, 6), " "))
	}
	return ""
}

func firstOf(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// checkAgentProbes says what is wrong with the probe results an agent
// reports on /v1/status: a result naming a peer outside the rail's
// tenant, or (with passing) one that failed.
func checkAgentProbes(f *lab.Fabric, host int, st v1.NodeStatus, passing bool) string {
	for _, r := range st.Probes {
		ph, ok := f.HostOf(r.PeerNode)
		if !ok {
			return fmt.Sprintf("%s rail %d probed %s, not a node of the lab", f.Node(host), r.Rail, r.PeerNode)
		}
		mine, theirs := f.Rail(host, r.Rail).Tenant, f.Rail(ph, r.PeerRail).Tenant
		if mine == "" || mine != theirs || r.Rail != r.PeerRail {
			return fmt.Sprintf("%s rail %d (%s) probed %s rail %d (%s)", f.Node(host), r.Rail, mine, r.PeerNode, r.PeerRail, theirs)
		}
		if passing && (r.Error != "" || (r.Reachable != nil && !*r.Reachable)) {
			return fmt.Sprintf("%s rail %d -> %s %s %s failed: %s", f.Node(host), r.Rail, r.PeerNode, r.Tool, r.Family, r.Error)
		}
	}
	return ""
}

// testProbes checks the agents' peer probes in the running lab, right
// after convergence: within a few probe intervals every tenant's health
// has OK pairs from each member, and only its own; the agents report the
// results, PeerReachable and the metrics; roce-agent probe passes to a
// peer and refuses another tenant's node; forged requests to the probe
// API are refused.
func testProbes(t *testing.T, f *lab.Fabric, procs *lab.Processes) {
	interval := procs.ProbeInterval()
	if interval == 0 {
		t.Skip("the lab runs no scheduled probes")
	}
	t0 := time.Now()
	plan := f.Plan()
	// Rounds start on the interval's boundaries; each rail probes every
	// peer of the default plan in a round. The peer API's rate limit
	// (a burst of 10 requests per peer node, then one a second) spreads a
	// node's 48 tests a round (8 rails x 3 tools x 2 families) over
	// several rounds: every member's first results come within a few.
	why := eventually(6*interval+10*time.Second, func() string {
		for _, tn := range plan.Tenants {
			th, err := procs.TenantHealth(context.Background(), tn.ID)
			if err != nil {
				return err.Error()
			}
			if why := checkPairs(f, th, false); why != "" {
				return why
			}
		}
		return ""
	})
	if why != "" {
		t.Fatal(why)
	}
	t.Logf("every tenant's members have OK probe pairs %s after convergence", time.Since(t0).Round(100*time.Millisecond))

	// The agents: results within the tenant only, all passing; a rail of
	// gpu-00 PeerReachable True, naming its peer gpu-02.
	why = eventually(3*interval, func() string {
		for h := 0; h < f.Hosts(); h++ {
			st, err := procs.AgentStatus(context.Background(), h)
			if err != nil {
				return err.Error()
			}
			if why := checkAgentProbes(f, h, st, true); why != "" {
				return why
			}
			if h != 0 {
				continue
			}
			reachable := false
			for _, r := range st.Rails {
				c := condition(r.Conditions, v1.ConditionPeerReachable)
				if c.Status == v1.StatusTrue && r.Tenant != nil && r.Tenant.ID == "tenant-a" && strings.Contains(c.Message, "gpu-02") {
					reachable = true
				}
				if c.Status == v1.StatusFalse {
					return fmt.Sprintf("gpu-00 rail %d: PeerReachable False: %s", r.Rail, c.Message)
				}
			}
			if !reachable {
				return "gpu-00: no rail with PeerReachable True naming gpu-02"
			}
		}
		return ""
	})
	if why != "" {
		t.Error(why)
	}
	metrics, err := httpGet(f, procs.AgentURL(0)+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^roce_agent_probe_results_total\{outcome="pass",peer_node="gpu-02",rail="\d",tool="(rping|ib_write_lat|ib_write_bw)"\} [1-9]`,
		`(?m)^roce_agent_probe_success\{family="ipv[46]",peer_node="gpu-02",rail="\d",tool="[a-z_]+"\} 1$`,
		`(?m)^roce_agent_probe_api_requests_total\{result="started"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("gpu-00's metrics have no line matching %s", re)
		}
	}
	if m := regexp.MustCompile(`(?m)^roce_agent_probe_results_total\{[^}]*peer_node="(gpu-01|gpu-03)"`).FindString(metrics); m != "" {
		t.Errorf("gpu-00 (tenant-a) probed another tenant's node: %s", m)
	}

	t.Run("roce-agent probe", func(t *testing.T) { testProbeCommand(t, f, procs) })
	t.Run("forged requests refused", func(t *testing.T) { testForgedProbes(t, f, procs) })
}

// testProbeCommand runs roce-agent probe on gpu-00 with its agent's
// config: to gpu-02 (tenant-a) on rail 0 it passes, to gpu-01 (tenant-b
// on rail 0) it is a usage error.
func testProbeCommand(t *testing.T, f *lab.Fabric, procs *lab.Processes) {
	bin := binaries(t)
	probeCmd := func(peer string) (string, string, int) {
		cmd := exec.Command("ip", "netns", "exec", f.HostNS(0), filepath.Join(bin, "roce-agent"),
			"--config", procs.AgentConfig(0), "probe", "--peer", peer, "--rail", "0", "--tool", "rping", "--family", "ipv4", "-o", "json")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), code
	}
	// The daemon probes the same NICs (one test per NIC at a time) and
	// spends gpu-00's allowance at gpu-02's API: busy answers are retried.
	var out, errOut string
	code, tries := -1, 0
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tries++
		out, errOut, code = probeCmd("gpu-02")
		if code != 1 || !strings.Contains(errOut, "(busy)") {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if code != 0 {
		t.Fatalf("roce-agent probe --peer gpu-02: exit %d after %d tries\n%s\n%s", code, tries, out, errOut)
	}
	var res v1.ProbeResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("roce-agent probe -o json: %v\n%s", err, out)
	}
	if res.PeerNode != "gpu-02" || res.Rail != 0 || res.Tool != "rping" || res.Reachable == nil || !*res.Reachable || res.Error != "" {
		t.Errorf("roce-agent probe --peer gpu-02: %+v", res)
	}
	t.Logf("roce-agent probe --peer gpu-02 passed after %d tries", tries)
	out, errOut, code = probeCmd("gpu-01")
	if code != 2 || !strings.Contains(errOut, "not a probe peer") {
		t.Errorf("roce-agent probe --peer gpu-01 (another tenant): exit %d, want 2 (not a probe peer)\n%s\n%s", code, out, errOut)
	}
}

// testForgedProbes sends session requests to gpu-00's probe API on its
// rail 0 address (tenant-a) that a peer would not send.
func testForgedProbes(t *testing.T, f *lab.Fabric, procs *lab.Processes) {
	target := f.Rail(0, 0)
	url := fmt.Sprintf("https://%s:%d/v1/probe/sessions", target.HostIPv4.Addr(), lab.ProbeAPIPort)
	body := `{"rail":0,"peer_rail":0,"tool":"rping","family":"ipv4"}`
	certs := procs.Certs()
	post := func(host, rail int, certName string) (int, string, error) {
		src := f.Rail(host, rail).HostIPv4.Addr()
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // the server's name is a node, not this address
		if certName != "" {
			cert, key := certs.NodeCert(certName)
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: f.HostDialer(host, src), TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := c.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	for _, tc := range []struct {
		what       string
		host, rail int
		cert       string
		// status 0: no HTTP answer at all; want is in the error or body.
		status int
		want   string
	}{
		// Another tenant's rail: the tenant VRF has no route to tenant-a,
		// the leaf answers unreachable.
		{"gpu-01 rail 0 (tenant-b), its own certificate", 1, 0, "gpu-01", 0, "dial tcp"},
		// A member's rail with another node's certificate: admitted by
		// address, refused by name.
		{"gpu-02 rail 0 (tenant-a) with gpu-01's certificate", 2, 0, "gpu-01", http.StatusForbidden, `certificate of \"gpu-01\"`},
		{"gpu-02 rail 0 (tenant-a) with the admin's certificate", 2, 0, lab.AdminName, http.StatusForbidden, `certificate of \"admin\"`},
		// No client certificate: the TLS handshake fails.
		{"gpu-02 rail 0 (tenant-a) without a certificate", 2, 0, "", 0, "certificate required"},
		// gpu-02's certificate from its rail 1 address: rail 1's policy
		// routing has no route to rail 0's pool.
		{"gpu-02 rail 1 with gpu-02's certificate", 2, 1, "gpu-02", 0, "dial tcp"},
	} {
		status, got, err := post(tc.host, tc.rail, tc.cert)
		switch {
		case tc.status == 0 && err == nil:
			t.Errorf("%s: answered %d %s, want no HTTP answer", tc.what, status, got)
		case tc.status == 0 && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %v, want an error with %q", tc.what, err, tc.want)
		case tc.status != 0 && err != nil:
			t.Errorf("%s: %v, want HTTP %d", tc.what, err, tc.status)
		case tc.status != 0 && (status != tc.status || !strings.Contains(got, tc.want)):
			t.Errorf("%s: %d %s, want %d with %s", tc.what, status, got, tc.status, tc.want)
		case err != nil:
			t.Logf("%s: refused: %v", tc.what, err)
		default:
			t.Logf("%s: refused: %d %s", tc.what, status, got)
		}
	}
	metrics, err := httpGet(f, procs.AgentURL(0)+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^roce_agent_probe_api_requests_total\{result="forbidden"\} [2-9]`).MatchString(metrics) {
		t.Errorf("gpu-00 counts fewer than 2 forbidden probe API requests")
	}
}

// testProbesAfterMove checks, once gpu-01's GPU 4 moved from tenant-c to
// tenant-a (and the leaves followed), the whole pair matrix: every pair
// of every tenant, OK, gpu-01 rail 4 with gpu-00 and gpu-02 in tenant-a
// and gone from tenant-c, and the agents' own results following.
func testProbesAfterMove(t *testing.T, f *lab.Fabric, procs *lab.Processes) {
	interval := procs.ProbeInterval()
	if interval == 0 {
		t.Skip("the lab runs no scheduled probes")
	}
	if f.Rail(1, 4).Tenant != "tenant-a" {
		t.Skip("gpu-01 rail 4 was not moved to tenant-a (the move subtest did not run)")
	}
	t0 := time.Now()
	var last map[string]v1.TenantHealth
	why := eventually(6*interval+10*time.Second, func() string {
		last = map[string]v1.TenantHealth{}
		for _, tn := range f.Plan().Tenants {
			th, err := procs.TenantHealth(context.Background(), tn.ID)
			if err != nil {
				return err.Error()
			}
			last[tn.ID] = th
			if why := checkPairs(f, th, true); why != "" {
				return why
			}
		}
		for h := 0; h < f.Hosts(); h++ {
			st, err := procs.AgentStatus(context.Background(), h)
			if err != nil {
				return err.Error()
			}
			if why := checkAgentProbes(f, h, st, false); why != "" {
				return why
			}
		}
		return ""
	})
	if why != "" {
		t.Fatal(why)
	}
	moved := []pairKey{{"gpu-01", 4, "gpu-00", 4}, {"gpu-01", 4, "gpu-02", 4}, {"gpu-00", 4, "gpu-01", 4}, {"gpu-02", 4, "gpu-01", 4}}
	for _, k := range moved {
		if !slices.ContainsFunc(last["tenant-a"].Pairs, func(p v1.ProbePair) bool {
			return pairKey{p.Node, p.Rail, p.PeerNode, p.PeerRail} == k
		}) {
			t.Errorf("tenant-a has no pair %s", k)
		}
	}
	for _, p := range last["tenant-c"].Pairs {
		if p.Rail == 4 {
			t.Errorf("tenant-c still has pair %s", pairKey{p.Node, p.Rail, p.PeerNode, p.PeerRail})
		}
	}
	t.Logf("full pair matrix OK %s after the check began: %s", time.Since(t0).Round(100*time.Millisecond), pairCounts(last))
}

func pairCounts(m map[string]v1.TenantHealth) string {
	var out []string
	for id, th := range m {
		out = append(out, fmt.Sprintf("%s %d/%d", id, th.PairsOK, th.PairsTotal))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
