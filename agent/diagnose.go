package agent

import (
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/qos"
)

// Diagnosis is what `roce-agent diag` compares the host against: the
// inventory, the desired rails, the live kernel state of the rails, the
// link plan and the QoS plan. Nothing is changed to make it.
type Diagnosis struct {
	Inventory *Inventory
	Desired   []linkengine.RailLink
	Unmanaged []string
	Live      linkengine.LiveState
	Link      linkengine.LinkPlan
	// LinkErr is why there is no link plan (a desired state that cannot
	// apply, the kernel unreadable); the QoS plan may still be there.
	LinkErr error
	// Note says the plan was made without the ownership record.
	Note    string
	Profile qos.Profile
	// QoS is nil without a qos section in the desired state.
	QoS *qos.Plan
}

// Diagnose reads the host like Plan, changing nothing, and returns the
// parts diag reports on. It fails only without an inventory.
func (n *Node) Diagnose() (*Diagnosis, error) {
	if err := n.Refresh(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	cfg, fs, link, inv, desired, unmanaged := n.cfg, n.fs, n.link, n.inv, n.desired, n.unmanaged
	n.mu.Unlock()
	d := &Diagnosis{Inventory: inv, Desired: desired, Unmanaged: unmanaged}
	d.Live, d.Link, d.Note, d.LinkErr = link.Diagnose(desired)
	if profile, _ := cfg.QoSProfile(); !profile.Empty() {
		d.Profile = profile
		plan := n.qosEngine(fs).Plan(profile, QoSTargets(inv))
		d.QoS = &plan
	}
	return d, nil
}
