package agent

import (
	"strings"
	"testing"

	"github.com/roce-agent/roce-agent/nic/linkengine"
)

// With no rail to manage, plan and apply say so instead of printing a bare
// count.
func TestReportsSayWhenThereIsNoRail(t *testing.T) {
	var plan, apply strings.Builder
	if err := NewPlanReport(nil, linkengine.LinkPlan{}, nil).Write(&plan, "table"); err != nil {
		t.Fatal(err)
	}
	if err := NewApplyReport(linkengine.ApplyResult{}, nil).Write(&apply, "table"); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"plan": plan.String(), "apply": apply.String()} {
		if !strings.Contains(out, "no rails to manage: the inventory has no rail NIC with an address") {
			t.Errorf("%s without rails:\n%s", name, out)
		}
	}
}
