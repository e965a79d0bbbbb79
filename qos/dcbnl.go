// Package qos configures a rail NIC's lossless class: DSCP trust, PFC on the
// RoCE priority, the DSCP-to-priority map and DCBX mode over dcbnl
// (rtnetlink RTM_GETDCB/RTM_SETDCB), the rdma_cm default RoCE ToS and mode
// over configfs, and DCQCN parameters over the backend the device exposes
// (upstream mlx5 debugfs, MLNX_OFED sysfs, Broadcom bnxt_re configfs).
package qos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// dcbnl constants (include/uapi/linux/dcbnl.h, rtnetlink.h).
const (
	rtmGetDCB = 78
	rtmSetDCB = 79

	cmdIEEESet = 20
	cmdIEEEGet = 21
	cmdGDCBX   = 22
	cmdSDCBX   = 23
	cmdIEEEDel = 27

	attrIfname = 1
	attrIEEE   = 13
	attrDCBX   = 14

	attrIEEEETS      = 1
	attrIEEEPFC      = 2
	attrIEEEAppTable = 3
	attrIEEEApp      = 1

	nlaFNested = 0x8000
	nlaTypeMsk = 0x3fff

	nlmFRequest = 0x1
	nlmFAck     = 0x4
	nlmsgError  = 0x2
	nlmsgDone   = 0x3

	nlmsgHdrLen = 16
	dcbMsgLen   = 4
)

// DCBX mode bits (DCB_CAP_DCBX_*).
const (
	DCBXHost       = 0x01
	DCBXLLDManaged = 0x02
	DCBXVerCEE     = 0x04
	DCBXVerIEEE    = 0x08
	DCBXStatic     = 0x10
)

// AppSelectorDSCP is the IEEE 802.1Qaz APP selector for DSCP.
const AppSelectorDSCP = 5

// PFC is struct ieee_pfc (136 bytes: pfc_cap, pfc_en, mbc, a pad byte,
// delay, then requests[8] and indications[8] as u64).
type PFC struct {
	Cap    uint8
	Enable uint8 // bit n: PFC on priority n
	MBC    uint8
	Delay  uint16
	// Requests and Indications count PFC frames sent and received per
	// priority (mlx5, bnxt); the kernel ignores them on set.
	Requests, Indications [8]uint64
}

const pfcLen = 136

// Marshal encodes the struct in host byte order, as the kernel expects.
func (p PFC) Marshal() []byte {
	b := make([]byte, pfcLen)
	b[0], b[1], b[2] = p.Cap, p.Enable, p.MBC
	binary.NativeEndian.PutUint16(b[4:], p.Delay)
	for i := 0; i < 8; i++ {
		binary.NativeEndian.PutUint64(b[8+8*i:], p.Requests[i])
		binary.NativeEndian.PutUint64(b[72+8*i:], p.Indications[i])
	}
	return b
}

// ParsePFC decodes struct ieee_pfc.
func ParsePFC(b []byte) (PFC, error) {
	if len(b) < pfcLen {
		return PFC{}, fmt.Errorf("ieee_pfc: %d bytes, want %d", len(b), pfcLen)
	}
	p := PFC{Cap: b[0], Enable: b[1], MBC: b[2], Delay: binary.NativeEndian.Uint16(b[4:])}
	for i := 0; i < 8; i++ {
		p.Requests[i] = binary.NativeEndian.Uint64(b[8+8*i:])
		p.Indications[i] = binary.NativeEndian.Uint64(b[72+8*i:])
	}
	return p, nil
}

// ETS is struct ieee_ets (59 bytes).
type ETS struct {
	Willing, Cap, CBS uint8
	TCTxBW            [8]uint8
	TCRxBW            [8]uint8
	TCTSA             [8]uint8 // 0 strict, 1 CBS, 2 ETS, 255 vendor
	PrioTC            [8]uint8
	TCRecoBW          [8]uint8
	TCRecoTSA         [8]uint8
	RecoPrioTC        [8]uint8
}

const etsLen = 59

// Marshal encodes struct ieee_ets.
func (e ETS) Marshal() []byte {
	b := make([]byte, 0, etsLen)
	b = append(b, e.Willing, e.Cap, e.CBS)
	for _, a := range [][8]uint8{e.TCTxBW, e.TCRxBW, e.TCTSA, e.PrioTC, e.TCRecoBW, e.TCRecoTSA, e.RecoPrioTC} {
		b = append(b, a[:]...)
	}
	return b
}

// ParseETS decodes struct ieee_ets.
func ParseETS(b []byte) (ETS, error) {
	if len(b) < etsLen {
		return ETS{}, fmt.Errorf("ieee_ets: %d bytes, want %d", len(b), etsLen)
	}
	e := ETS{Willing: b[0], Cap: b[1], CBS: b[2]}
	for i, a := range []*[8]uint8{&e.TCTxBW, &e.TCRxBW, &e.TCTSA, &e.PrioTC, &e.TCRecoBW, &e.TCRecoTSA, &e.RecoPrioTC} {
		copy(a[:], b[3+8*i:])
	}
	return e, nil
}

// App is struct dcb_app: an APP table entry (DSCP selector: protocol is the
// DSCP value).
type App struct {
	Selector uint8
	Priority uint8
	Protocol uint16
}

func (a App) marshal() []byte {
	b := []byte{a.Selector, a.Priority, 0, 0}
	binary.NativeEndian.PutUint16(b[2:], a.Protocol)
	return b
}

// IEEE is the IEEE 802.1Qaz state of a port: what DCB_CMD_IEEE_GET returns
// and DCB_CMD_IEEE_SET takes (nil fields are left out of a set).
type IEEE struct {
	ETS  *ETS
	PFC  *PFC
	Apps []App
}

// Errors the kernel reports for dcbnl requests, mapped to what they mean.
var (
	// ErrUnsupported: the device has no dcbnl operations (a VF, veth,
	// bond, soft-RoCE netdev) or not this one.
	ErrUnsupported = errors.New("not supported by the device")
	// ErrPermission: setting DCB needs CAP_NET_ADMIN.
	ErrPermission = errors.New("permission denied (needs CAP_NET_ADMIN)")
	// ErrNoDevice: no such netdev in the namespace.
	ErrNoDevice = errors.New("no such network device")
)

// errnoError maps a kernel errno from a dcbnl request.
func errnoError(op string, errno syscall.Errno) error {
	switch errno {
	case syscall.EOPNOTSUPP:
		return fmt.Errorf("%s: %w (EOPNOTSUPP)", op, ErrUnsupported)
	case syscall.EPERM, syscall.EACCES:
		return fmt.Errorf("%s: %w", op, ErrPermission)
	case syscall.ENODEV:
		return fmt.Errorf("%s: %w", op, ErrNoDevice)
	}
	return fmt.Errorf("%s: %w", op, errno)
}

// attr encodes a netlink attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	n := 4 + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

func nested(typ uint16, children ...[]byte) []byte {
	var data []byte
	for _, c := range children {
		data = append(data, c...)
	}
	return attr(typ|nlaFNested, data)
}

// message builds a complete netlink message: header, dcbmsg, attributes.
func message(typ uint16, cmd uint8, seq uint32, attrs ...[]byte) []byte {
	body := []byte{0 /* AF_UNSPEC */, cmd, 0, 0}
	for _, a := range attrs {
		body = append(body, a...)
	}
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], nlmFRequest|nlmFAck)
	binary.NativeEndian.PutUint32(b[8:], seq)
	return append(b, body...)
}

func ifname(name string) []byte { return attr(attrIfname, append([]byte(name), 0)) }

// EncodeIEEEGet is DCB_CMD_IEEE_GET for a netdev.
// Equivalent to the request of: dcb app show dev $if (and dcb pfc show).
func EncodeIEEEGet(dev string, seq uint32) []byte {
	return message(rtmGetDCB, cmdIEEEGet, seq, ifname(dev))
}

// EncodeIEEESet is DCB_CMD_IEEE_SET with the ETS, PFC and APP entries given.
// Equivalent to: dcb app add dev $if dscp-prio D:P ...
func EncodeIEEESet(dev string, s IEEE, seq uint32) []byte {
	return message(rtmSetDCB, cmdIEEESet, seq, ifname(dev), ieeeAttr(s))
}

// EncodeIEEEDel is DCB_CMD_IEEE_DEL of APP entries.
// Equivalent to: dcb app del dev $if dscp-prio D:P ...
func EncodeIEEEDel(dev string, apps []App, seq uint32) []byte {
	return message(rtmSetDCB, cmdIEEEDel, seq, ifname(dev), ieeeAttr(IEEE{Apps: apps}))
}

func ieeeAttr(s IEEE) []byte {
	var children [][]byte
	if s.ETS != nil {
		children = append(children, attr(attrIEEEETS, s.ETS.Marshal()))
	}
	if s.PFC != nil {
		children = append(children, attr(attrIEEEPFC, s.PFC.Marshal()))
	}
	if len(s.Apps) > 0 {
		var apps [][]byte
		for _, a := range s.Apps {
			apps = append(apps, attr(attrIEEEApp, a.marshal()))
		}
		children = append(children, nested(attrIEEEAppTable, apps...))
	}
	return nested(attrIEEE, children...)
}

// EncodeGetDCBX is DCB_CMD_GDCBX.
func EncodeGetDCBX(dev string, seq uint32) []byte {
	return message(rtmGetDCB, cmdGDCBX, seq, ifname(dev))
}

// EncodeSetDCBX is DCB_CMD_SDCBX with the DCBX mode bits.
// Equivalent to: dcb dcbx set dev $if host ieee (mode 0x09).
func EncodeSetDCBX(dev string, mode uint8, seq uint32) []byte {
	return message(rtmSetDCB, cmdSDCBX, seq, ifname(dev), attr(attrDCBX, []byte{mode}))
}

// rawAttr is one decoded attribute.
type rawAttr struct {
	typ  uint16
	data []byte
}

// parseAttrs decodes a run of netlink attributes.
func parseAttrs(b []byte) ([]rawAttr, error) {
	var out []rawAttr
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b[0:]))
		if n < 4 || n > len(b) {
			return out, fmt.Errorf("attribute length %d with %d bytes left", n, len(b))
		}
		out = append(out, rawAttr{typ: binary.NativeEndian.Uint16(b[2:]) & nlaTypeMsk, data: b[4:n]})
		adv := (n + 3) &^ 3
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
	}
	return out, nil
}

// reply is one decoded dcbnl reply: the netlink type, the dcbmsg command
// and its attributes, or the errno of an NLMSG_ERROR.
type reply struct {
	typ   uint16
	seq   uint32
	cmd   uint8
	attrs []rawAttr
	errno syscall.Errno
	isAck bool // NLMSG_ERROR with error 0
}

// parseMessages splits a datagram into netlink messages and decodes each.
func parseMessages(b []byte) ([]reply, error) {
	var out []reply
	for len(b) >= nlmsgHdrLen {
		n := int(binary.NativeEndian.Uint32(b[0:]))
		if n < nlmsgHdrLen || n > len(b) {
			return out, fmt.Errorf("netlink message length %d with %d bytes left", n, len(b))
		}
		r := reply{typ: binary.NativeEndian.Uint16(b[4:]), seq: binary.NativeEndian.Uint32(b[8:])}
		payload := b[nlmsgHdrLen:n]
		switch r.typ {
		case nlmsgError:
			if len(payload) < 4 {
				return out, errors.New("short NLMSG_ERROR")
			}
			code := int32(binary.NativeEndian.Uint32(payload))
			if code == 0 {
				r.isAck = true
			} else {
				r.errno = syscall.Errno(-code)
			}
		case nlmsgDone:
		default:
			if len(payload) < dcbMsgLen {
				return out, fmt.Errorf("dcbnl reply of %d bytes has no dcbmsg", len(payload))
			}
			r.cmd = payload[1]
			attrs, err := parseAttrs(payload[dcbMsgLen:])
			if err != nil {
				return out, err
			}
			r.attrs = attrs
		}
		out = append(out, r)
		adv := (n + 3) &^ 3
		if adv > len(b) {
			adv = len(b)
		}
		b = b[adv:]
	}
	return out, nil
}

// ParseIEEEGet decodes the attributes of a DCB_CMD_IEEE_GET reply: ETS,
// PFC and the APP table, from the nested DCB_ATTR_IEEE.
func ParseIEEEGet(attrs []rawAttr) (IEEE, error) {
	var s IEEE
	for _, a := range attrs {
		if a.typ != attrIEEE {
			continue
		}
		inner, err := parseAttrs(a.data)
		if err != nil {
			return s, fmt.Errorf("parse DCB_ATTR_IEEE: %w", err)
		}
		for _, in := range inner {
			switch in.typ {
			case attrIEEEETS:
				e, err := ParseETS(in.data)
				if err != nil {
					return s, err
				}
				s.ETS = &e
			case attrIEEEPFC:
				p, err := ParsePFC(in.data)
				if err != nil {
					return s, err
				}
				s.PFC = &p
			case attrIEEEAppTable:
				apps, err := parseAttrs(in.data)
				if err != nil {
					return s, fmt.Errorf("parse APP table: %w", err)
				}
				for _, ap := range apps {
					if ap.typ != attrIEEEApp || len(ap.data) < 4 {
						continue
					}
					s.Apps = append(s.Apps, App{Selector: ap.data[0], Priority: ap.data[1], Protocol: binary.NativeEndian.Uint16(ap.data[2:])})
				}
			}
		}
	}
	return s, nil
}

// setResult reads the in-band result of a set command: dcbnl_ieee_set and
// dcbnl_ieee_del reply with DCB_ATTR_IEEE holding the driver's return as a
// u8 (a negative errno), SDCBX with DCB_ATTR_DCBX (0 success, else failure),
// while the netlink ACK may still report success.
func setResult(op string, r reply) error {
	for _, a := range r.attrs {
		if (a.typ == attrIEEE || a.typ == attrDCBX) && len(a.data) >= 1 {
			v := int8(a.data[0])
			switch {
			case v == 0:
				return nil
			case a.typ == attrDCBX:
				return fmt.Errorf("%s: driver refused DCBX mode (returned %d)", op, a.data[0])
			default:
				return errnoError(op, syscall.Errno(-int(v)))
			}
		}
	}
	return nil
}

// ParseDCBX decodes the mode of a DCB_CMD_GDCBX reply.
func parseDCBX(attrs []rawAttr) (uint8, bool) {
	for _, a := range attrs {
		if a.typ == attrDCBX && len(a.data) >= 1 {
			return a.data[0], true
		}
	}
	return 0, false
}
