package qos

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loadCapture reads a dcb capture (capture.sh): the bytes dcb sent.
func loadCapture(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "dcb", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, " | ") {
			continue
		}
		// " | 00000  2c 00 00 00 4f 00 05 00  08 f8 02 6b 00 00 00 00  ,...O......k.... |"
		fields := line[10:59]
		b, err := hex.DecodeString(strings.ReplaceAll(fields, " ", ""))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, b...)
	}
	if len(out) < nlmsgHdrLen {
		t.Fatalf("%s: no bytes captured", name)
	}
	return out
}

// TestEncodersMatchIproute2 requires each encoder to produce the bytes
// iproute2's dcb sent for the same request (testdata/dcb/capture.sh), with
// the capture's sequence number.
func TestEncodersMatchIproute2(t *testing.T) {
	for _, tc := range []struct {
		capture string
		encode  func(seq uint32) []byte
	}{
		{"app-add-dscp-26-3", func(seq uint32) []byte {
			return EncodeIEEESet("v0", IEEE{Apps: []App{{AppSelectorDSCP, 3, 26}}}, seq)
		}},
		{"app-add-dscp-26-3-48-6", func(seq uint32) []byte {
			return EncodeIEEESet("v0", IEEE{Apps: []App{{AppSelectorDSCP, 3, 26}, {AppSelectorDSCP, 6, 48}}}, seq)
		}},
		{"app-del-dscp-26-3", func(seq uint32) []byte { return EncodeIEEEDel("v0", []App{{AppSelectorDSCP, 3, 26}}, seq) }},
		{"dcbx-set-host-ieee", func(seq uint32) []byte { return EncodeSetDCBX("v0", DCBXHost|DCBXVerIEEE, seq) }},
		// dcb reads before it writes PFC: its first request is IEEE_GET.
		{"pfc-set-3-on", func(seq uint32) []byte { return EncodeIEEEGet("v0", seq) }},
		{"app-show", func(seq uint32) []byte { return EncodeIEEEGet("v0", seq) }},
	} {
		t.Run(tc.capture, func(t *testing.T) {
			want := loadCapture(t, tc.capture)
			seq := binary.NativeEndian.Uint32(want[8:])
			got := tc.encode(seq)
			if !bytes.Equal(got, want) {
				t.Errorf("encoded\n%s\ndcb sent\n%s", hex.Dump(got), hex.Dump(want))
			}
		})
	}
}

// ieee_pfc and ieee_ets as interfaces.md gives them (gcc, x86_64):
// sizeof(ieee_pfc)=136 with delay at 4, requests at 8, indications at 72;
// sizeof(ieee_ets)=59.
func TestStructLayouts(t *testing.T) {
	p := PFC{Cap: 8, Enable: 1 << 3, MBC: 1, Delay: 0x0102}
	p.Requests[3], p.Indications[6] = 0x1122334455667788, 9
	b := p.Marshal()
	if len(b) != 136 || b[0] != 8 || b[1] != 0x08 || b[2] != 1 || b[3] != 0 ||
		binary.NativeEndian.Uint16(b[4:]) != 0x0102 ||
		binary.NativeEndian.Uint64(b[8+3*8:]) != 0x1122334455667788 ||
		binary.NativeEndian.Uint64(b[72+6*8:]) != 9 {
		t.Errorf("ieee_pfc layout wrong:\n%s", hex.Dump(b))
	}
	back, err := ParsePFC(b)
	if err != nil || back != p {
		t.Errorf("PFC round trip: %+v %v", back, err)
	}
	e := ETS{Willing: 1, Cap: 8, TCTSA: [8]uint8{2, 2, 2, 2, 2, 2, 2, 2}, PrioTC: [8]uint8{1, 0, 2, 3, 4, 5, 6, 7}}
	e.TCTxBW[3] = 50
	eb := e.Marshal()
	if len(eb) != 59 || eb[3+3] != 50 || eb[3+16+0] != 2 || eb[3+24+0] != 1 {
		t.Errorf("ieee_ets layout wrong:\n%s", hex.Dump(eb))
	}
	if back, err := ParseETS(eb); err != nil || back != e {
		t.Errorf("ETS round trip: %+v %v", back, err)
	}
}

// fakePeer answers requests with canned datagrams, as the kernel would.
type fakePeer struct {
	reqs    [][]byte
	respond func(req []byte, seq uint32) [][]byte
}

func (f *fakePeer) Exchange(req []byte) ([][]byte, error) {
	f.reqs = append(f.reqs, req)
	return f.respond(req, binary.NativeEndian.Uint32(req[8:])), nil
}

func ack(seq uint32, errno syscall.Errno) []byte {
	b := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], nlmsgError)
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[16:], uint32(-int32(errno)))
	return b
}

// replyMsg is a dcbnl reply as the kernel builds it.
func replyMsg(typ uint16, cmd uint8, seq uint32, attrs ...[]byte) []byte {
	return message(typ, cmd, seq, attrs...)
}

func TestDCBAgainstFakePeer(t *testing.T) {
	pfc := PFC{Cap: 8, Enable: 1 << 3}
	pfc.Requests[3] = 42
	ets := ETS{TCTSA: [8]uint8{255, 255, 255, 255, 255, 255, 255, 255}, PrioTC: [8]uint8{1, 0, 2, 3, 4, 5, 6, 7}}
	getReply := func(seq uint32) []byte {
		return replyMsg(rtmGetDCB, cmdIEEEGet, seq, ifname("eth0"), nested(attrIEEE,
			attr(attrIEEEETS, ets.Marshal()),
			attr(attrIEEEPFC, pfc.Marshal()),
			nested(attrIEEEAppTable, attr(attrIEEEApp, App{5, 3, 26}.marshal()), attr(attrIEEEApp, App{5, 6, 48}.marshal()))))
	}
	peer := &fakePeer{respond: func(req []byte, seq uint32) [][]byte {
		switch req[17] {
		case cmdIEEEGet:
			return [][]byte{getReply(seq), ack(seq, 0)}
		case cmdIEEESet:
			// In-band failure: the driver returned -EINVAL; the ACK says 0.
			return [][]byte{replyMsg(rtmSetDCB, cmdIEEESet, seq, attr(attrIEEE, []byte{byte(0x100 - int(syscall.EINVAL))})), ack(seq, 0)}
		case cmdIEEEDel:
			return [][]byte{replyMsg(rtmSetDCB, cmdIEEEDel, seq, attr(attrIEEE, []byte{0})), ack(seq, 0)}
		case cmdGDCBX:
			return [][]byte{replyMsg(rtmGetDCB, cmdGDCBX, seq, attr(attrDCBX, []byte{DCBXHost | DCBXVerIEEE})), ack(seq, 0)}
		case cmdSDCBX:
			return [][]byte{replyMsg(rtmSetDCB, cmdSDCBX, seq, attr(attrDCBX, []byte{1})), ack(seq, 0)}
		}
		return [][]byte{ack(seq, syscall.EINVAL)}
	}}
	d := NewDCB(peer)
	got, err := d.IEEE("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got.PFC == nil || got.PFC.Enable != 0x08 || got.PFC.Requests[3] != 42 || got.ETS == nil || got.ETS.PrioTC[0] != 1 ||
		len(got.Apps) != 2 || got.Apps[1] != (App{5, 6, 48}) {
		t.Errorf("IEEE = %+v", got)
	}
	if !bytes.Equal(peer.reqs[0], EncodeIEEEGet("eth0", 1)) {
		t.Errorf("request bytes:\n%s", hex.Dump(peer.reqs[0]))
	}
	err = d.SetIEEE("eth0", IEEE{Apps: []App{{5, 3, 26}}})
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("in-band error: %v", err)
	}
	if err := d.DelApps("eth0", []App{{5, 3, 26}}); err != nil {
		t.Errorf("del: %v", err)
	}
	if mode, err := d.DCBX("eth0"); err != nil || mode != 0x09 {
		t.Errorf("dcbx = %x, %v", mode, err)
	}
	if err := d.SetDCBX("eth0", 0x09); err == nil || !strings.Contains(err.Error(), "driver refused DCBX mode") {
		t.Errorf("sdcbx refused: %v", err)
	}
}

func TestDCBErrnoMapping(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  error
	}{
		{syscall.EOPNOTSUPP, ErrUnsupported},
		{syscall.EPERM, ErrPermission},
		{syscall.ENODEV, ErrNoDevice},
	} {
		d := NewDCB(&fakePeer{respond: func(_ []byte, seq uint32) [][]byte { return [][]byte{ack(seq, tc.errno)} }})
		if _, err := d.IEEE("veth0"); !errors.Is(err, tc.want) {
			t.Errorf("errno %v: %v, want %v", tc.errno, err, tc.want)
		}
	}
	// A reply of another sequence is not the answer.
	d := NewDCB(&fakePeer{respond: func(_ []byte, seq uint32) [][]byte { return [][]byte{ack(seq+7, 0)} }})
	if _, err := d.IEEE("eth0"); !errors.Is(err, errNoReply) {
		t.Errorf("stale reply: %v", err)
	}
}

// FuzzParseReply feeds arbitrary datagrams to the reply decoders: they
// must return an error or a value, never panic.
func FuzzParseReply(f *testing.F) {
	pfc := PFC{Cap: 8, Enable: 8}
	f.Add(replyMsg(rtmGetDCB, cmdIEEEGet, 1, ifname("eth0"), nested(attrIEEE, attr(attrIEEEPFC, pfc.Marshal()),
		nested(attrIEEEAppTable, attr(attrIEEEApp, App{5, 3, 26}.marshal())))))
	f.Add(ack(1, syscall.EOPNOTSUPP))
	f.Add(replyMsg(rtmSetDCB, cmdIEEESet, 1, attr(attrIEEE, []byte{0xea})))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, _ := parseMessages(b)
		for _, m := range msgs {
			_, _ = ParseIEEEGet(m.attrs)
			_ = setResult("fuzz", m)
			_, _ = parseDCBX(m.attrs)
		}
	})
}
