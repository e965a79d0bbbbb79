package qos

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Exchanger sends one netlink request and returns the datagrams received
// until the kernel's answer to it is complete (an NLMSG_ERROR, which is the
// ACK or the error). The real one is a NETLINK_ROUTE socket; tests use a
// fake peer.
type Exchanger interface {
	Exchange(req []byte) ([][]byte, error)
}

// DCB talks dcbnl to one network namespace.
type DCB struct {
	x   Exchanger
	seq atomic.Uint32
}

// NewDCB returns a dcbnl client over x.
func NewDCB(x Exchanger) *DCB { return &DCB{x: x} }

func (d *DCB) nextSeq() uint32 { return d.seq.Add(1) }

// do sends req and returns the reply message (if any) of its sequence,
// turning a netlink error into a mapped error.
func (d *DCB) do(op string, req []byte, seq uint32) (reply, error) {
	grams, err := d.x.Exchange(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s: %w", op, err)
	}
	var got reply
	found := false
	for _, g := range grams {
		msgs, err := parseMessages(g)
		if err != nil {
			return reply{}, fmt.Errorf("%s: parse reply: %w", op, err)
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue
			}
			if m.errno != 0 {
				return reply{}, errnoError(op, m.errno)
			}
			if !m.isAck && m.typ != nlmsgDone {
				got, found = m, true
			}
		}
	}
	if !found {
		return reply{}, fmt.Errorf("%s: %w", op, errNoReply)
	}
	return got, nil
}

var errNoReply = errors.New("no dcbnl reply")

// IEEE reads the port's IEEE 802.1Qaz state (ETS, PFC, APP table).
// Equivalent to: dcb app show dev $if; dcb pfc show dev $if.
func (d *DCB) IEEE(dev string) (IEEE, error) {
	seq := d.nextSeq()
	r, err := d.do("dcb ieee get "+dev, EncodeIEEEGet(dev, seq), seq)
	if err != nil {
		return IEEE{}, err
	}
	return ParseIEEEGet(r.attrs)
}

// SetIEEE sets ETS, PFC and/or APP entries.
func (d *DCB) SetIEEE(dev string, s IEEE) error {
	seq := d.nextSeq()
	op := "dcb ieee set " + dev
	r, err := d.do(op, EncodeIEEESet(dev, s, seq), seq)
	if err != nil {
		return err
	}
	return setResult(op, r)
}

// DelApps deletes APP entries.
func (d *DCB) DelApps(dev string, apps []App) error {
	seq := d.nextSeq()
	op := "dcb ieee del " + dev
	r, err := d.do(op, EncodeIEEEDel(dev, apps, seq), seq)
	if err != nil {
		return err
	}
	return setResult(op, r)
}

// DCBX reads the DCBX mode bits.
func (d *DCB) DCBX(dev string) (uint8, error) {
	seq := d.nextSeq()
	r, err := d.do("dcb dcbx get "+dev, EncodeGetDCBX(dev, seq), seq)
	if err != nil {
		return 0, err
	}
	mode, ok := parseDCBX(r.attrs)
	if !ok {
		return 0, fmt.Errorf("dcb dcbx get %s: reply without DCB_ATTR_DCBX", dev)
	}
	return mode, nil
}

// SetDCBX sets the DCBX mode bits.
func (d *DCB) SetDCBX(dev string, mode uint8) error {
	seq := d.nextSeq()
	op := "dcb dcbx set " + dev
	r, err := d.do(op, EncodeSetDCBX(dev, mode, seq), seq)
	if err != nil {
		return err
	}
	return setResult(op, r)
}
