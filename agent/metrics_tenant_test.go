package agent

import (
	"strconv"
	"strings"
	"testing"
)

// A rail bound to a tenant exports rail_tenant_info, which dashboards and
// alerts join on (instance, rail) to select a tenant's rails; a rail
// without a tenant exports none.
func TestMetricsRailTenantInfo(t *testing.T) {
	fs := fixtureFS(t, "mixed-vendor")
	m, st := fixtureMetrics(t, fs, nil)
	if len(st.Rails) < 2 {
		t.Fatalf("fixture has %d rails, want 2 or more", len(st.Rails))
	}
	st.Rails[0].Tenant = &TenantConfig{ID: "tenant-a", VRF: "vrf-a", VNI: 10001}
	got := scrape(t, m)
	want := `roce_agent_rail_tenant_info{rail="` + strconv.Itoa(st.Rails[0].Rail) + `",tenant="tenant-a",vni="10001",vrf="vrf-a"} 1`
	if !strings.Contains(got, want) {
		t.Errorf("scrape lacks %s:\n%s", want, got)
	}
	if n := strings.Count(got, "roce_agent_rail_tenant_info{"); n != 1 {
		t.Errorf("%d rail_tenant_info series, want 1 (rails without a tenant export none):\n%s", n, got)
	}
	promtoolCheck(t, got)
}
