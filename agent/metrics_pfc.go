package agent

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roce-agent/roce-agent/qos"
)

var descPFC = desc("pfc_pause_frames_total", "PFC pause frames per priority, from dcbnl ieee_pfc (tx = requests, rx = indications).", "netdev", "priority", "direction")

// pfcPart reads each rail netdev's PFC pause frame counters over dcbnl.
type pfcPart struct {
	pfc PFCReader
}

func (*pfcPart) name() string { return "pfc" }

func (p *pfcPart) collect(ch chan<- prometheus.Metric, st *NodeStatus) []error {
	var errs []error
	for _, r := range st.Inventory.Rails {
		if r.Netdev == "" {
			continue
		}
		ieee, err := p.pfc.IEEE(r.Netdev)
		switch {
		case errors.Is(err, qos.ErrUnsupported), errors.Is(err, qos.ErrNoDevice):
			continue // no dcbnl (veth, VF, rxe) or not in this namespace: nothing to report
		case err != nil:
			errs = append(errs, err)
			continue
		case ieee.PFC == nil:
			continue // the driver has no getpfc
		}
		for prio := 0; prio < 8; prio++ {
			ch <- prometheus.MustNewConstMetric(descPFC, prometheus.CounterValue, float64(ieee.PFC.Requests[prio]), r.Netdev, strconv.Itoa(prio), "tx")
			ch <- prometheus.MustNewConstMetric(descPFC, prometheus.CounterValue, float64(ieee.PFC.Indications[prio]), r.Netdev, strconv.Itoa(prio), "rx")
		}
	}
	return errs
}
