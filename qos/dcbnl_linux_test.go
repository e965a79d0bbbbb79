package qos

import (
	"errors"
	"testing"

	"github.com/roce-agent/roce-agent/nic"
	"github.com/roce-agent/roce-agent/nic/linkengine"
	"github.com/roce-agent/roce-agent/nic/nettest"
)

// On a real veth the kernel has no dcbnl ops: it answers every request
// with EOPNOTSUPP, and the engine reports the dcb group unsupported.
func TestVethHasNoDCB(t *testing.T) {
	nettest.RequireRoot(t)
	lab := nettest.NewLab(t, 1)
	host, err := linkengine.OpenHost(lab.Host.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	var sock *Socket
	if err := host.Do(func() (err error) { sock, err = OpenSocket(); return err }); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	d := NewDCB(sock)
	if _, err := d.IEEE("rail0"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("IEEE get on a veth: %v", err)
	}
	if err := d.SetIEEE("rail0", IEEE{Apps: []App{{AppSelectorDSCP, 3, 26}}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("IEEE set on a veth: %v", err)
	}
	if err := d.SetDCBX("rail0", DCBXHost|DCBXVerIEEE); !errors.Is(err, ErrUnsupported) {
		t.Errorf("SDCBX on a veth: %v", err)
	}
	if _, err := d.IEEE("nosuchdev"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("IEEE get on a missing netdev: %v", err)
	}
	fs, err := nic.NewFS("/sys")
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{Files: fs, DCB: d}
	plan := e.Plan(roceProfile(), []Target{{Rail: 0, Netdev: "rail0"}})
	if len(plan.Changes) != 0 || len(plan.Unsupported) != 3 || plan.Unsupported[0].Group != GroupDCB {
		t.Errorf("plan: %s", transcript(plan))
	}
}
