package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// ncclRail is an HCA rail with both addresses and both GID indexes.
func ncclRail(rail int, dev, v4, v6 string, gid4, gid6 int) RailStatus {
	return RailStatus{Rail: rail, Netdev: fmt.Sprintf("rail%d", rail), RDMADevice: dev,
		IPv4: v4, IPv6: v6, GIDIndexIPv4: gid4, GIDIndexIPv6: gid6}
}

// ncclEightRails are rails 0-7 on mlx5_0..mlx5_7, 10.0.<n>.1/31 and
// fd00:0:0:<n>::1/64, GID indexes 3 (IPv4) and 5 (IPv6).
func ncclEightRails() []RailStatus {
	var rails []RailStatus
	for n := 0; n < 8; n++ {
		rails = append(rails, ncclRail(n, fmt.Sprintf("mlx5_%d", n),
			fmt.Sprintf("10.0.%d.1/31", n), fmt.Sprintf("fd00:0:0:%x::1/64", n), 3, 5))
	}
	return rails
}

func TestNCCLEnv(t *testing.T) {
	tos := 106
	const hdr = ncclHeader
	const (
		v4  = "NCCL_IB_ADDR_FAMILY=AF_INET\n"
		v6  = "NCCL_IB_ADDR_FAMILY=AF_INET6\n"
		rv2 = "NCCL_IB_ROCE_VERSION_NUM=2\n"
		tc  = "NCCL_IB_TC=106\n"
	)
	withRails := func(f func([]RailStatus) []RailStatus) []RailStatus { return f(ncclEightRails()) }
	cases := []struct {
		name  string
		rails []RailStatus
		tos   *int
		want  string
		notes []string
	}{
		{
			name:  "eight IPv4 rails, equal GID index, ToS",
			rails: ncclEightRails(),
			tos:   &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1\n" +
				v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/21\n" + rv2 + "NCCL_IB_GID_INDEX=3\n" + tc,
		},
		{
			name:  "no roce_tos: no NCCL_IB_TC and no note",
			rails: ncclEightRails()[:2],
			want:  hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/23\n" + rv2 + "NCCL_IB_GID_INDEX=3\n",
		},
		{
			name: "exact match: mlx5_1 with mlx5_10 and mlx5_11 among the rails, sorted by rail",
			rails: []RailStatus{
				ncclRail(2, "mlx5_11", "10.0.2.1/31", "", 3, -1),
				ncclRail(0, "mlx5_1", "10.0.0.1/31", "", 3, -1),
				ncclRail(1, "mlx5_10", "10.0.1.1/31", "", 3, -1),
			},
			tos:  &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_1:1,mlx5_10:1,mlx5_11:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/22\n" + rv2 + "NCCL_IB_GID_INDEX=3\n" + tc,
		},
		{
			// mlx5_10/mlx5_11 are on the host (storage, DPU) but not rails:
			// the leading "=" keeps mlx5_1 from selecting them.
			name: "exact match: mlx5_1 a rail, mlx5_10 and mlx5_11 not",
			rails: []RailStatus{
				ncclRail(1, "mlx5_1", "10.0.1.1/31", "", 3, -1),
				ncclRail(0, "mlx5_0", "10.0.0.1/31", "", 3, -1),
			},
			tos:  &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/23\n" + rv2 + "NCCL_IB_GID_INDEX=3\n" + tc,
		},
		{
			name: "range /16",
			rails: []RailStatus{
				ncclRail(0, "mlx5_0", "10.1.0.1/31", "", 3, -1),
				ncclRail(1, "mlx5_1", "10.1.128.1/31", "", 3, -1),
			},
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.1.0.0/16\n" + rv2 + "NCCL_IB_GID_INDEX=3\n",
		},
		{
			name:  "one rail: a host range",
			rails: []RailStatus{ncclRail(0, "mlx5_0", "192.168.7.9/24", "", 1, -1)},
			want:  hdr + "NCCL_IB_HCA==mlx5_0:1\n" + v4 + "NCCL_IB_ADDR_RANGE=192.168.7.9/32\n" + rv2 + "NCCL_IB_GID_INDEX=1\n",
		},
		{
			name: "IPv6-only rails",
			rails: []RailStatus{
				ncclRail(0, "mlx5_0", "", "fd00:0:0:1::1/64", -1, 5),
				ncclRail(1, "mlx5_1", "", "fd00:0:0:2::1/64", -1, 5),
			},
			tos:  &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + v6 + "NCCL_IB_ADDR_RANGE=fd00::/62\n" + rv2 + "NCCL_IB_GID_INDEX=5\n" + tc,
		},
		{
			name: "one rail without IPv4, all with IPv6: IPv6",
			rails: withRails(func(r []RailStatus) []RailStatus {
				r[3].IPv4, r[3].GIDIndexIPv4 = "", -1
				return r
			}),
			tos: &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1\n" +
				v6 + "NCCL_IB_ADDR_RANGE=fd00::/61\n" + rv2 + "NCCL_IB_GID_INDEX=5\n" + tc,
		},
		{
			name: "no family on every rail",
			rails: []RailStatus{
				ncclRail(0, "mlx5_0", "10.0.0.1/31", "", 3, -1),
				ncclRail(1, "mlx5_1", "", "fd00:0:0:1::1/64", -1, 3),
			},
			tos:  &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + tc,
			notes: []string{"NCCL_IB_ADDR_FAMILY, NCCL_IB_ADDR_RANGE and NCCL_IB_GID_INDEX left out: no address family is on every rail " +
				"(no IPv4 address on rail 1; no IPv6 address on rail 0); NCCL falls back to its own GID choice"},
		},
		{
			name: "GID indexes differ",
			rails: withRails(func(r []RailStatus) []RailStatus {
				r[1].GIDIndexIPv4 = 7
				return r[:3]
			}),
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1,mlx5_2:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/22\n" + rv2,
			notes: []string{"NCCL_IB_GID_INDEX left out: the rails' RoCE v2 GID indexes for their IPv4 address differ " +
				"(rail 0: 3, rail 1: 7, rail 2: 3); NCCL >= 2.21 picks it from NCCL_IB_ADDR_FAMILY/NCCL_IB_ADDR_RANGE, or set it per job"},
		},
		{
			name: "GID index unknown",
			rails: withRails(func(r []RailStatus) []RailStatus {
				r[0].GIDIndexIPv4, r[2].GIDIndexIPv4 = -1, -1
				return r[:3]
			}),
			tos:  &tos,
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1,mlx5_2:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/22\n" + rv2 + tc,
			notes: []string{"NCCL_IB_GID_INDEX left out: no RoCE v2 GID for the IPv4 address yet on rails 0, 2; " +
				"NCCL >= 2.21 picks it from NCCL_IB_ADDR_FAMILY/NCCL_IB_ADDR_RANGE"},
		},
		{
			// Only the IPv6 GID index is known: IPv4 is the family, so
			// the IPv6 index does not stand in for it.
			name: "IPv4 family, only the IPv6 GID index known",
			rails: withRails(func(r []RailStatus) []RailStatus {
				r[0].GIDIndexIPv4, r[1].GIDIndexIPv4 = -1, -1
				return r[:2]
			}),
			want: hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/23\n" + rv2,
			notes: []string{"NCCL_IB_GID_INDEX left out: no RoCE v2 GID for the IPv4 address yet on rails 0, 1; " +
				"NCCL >= 2.21 picks it from NCCL_IB_ADDR_FAMILY/NCCL_IB_ADDR_RANGE"},
		},
		{
			// A veth rail is not an HCA: it is left out of the list and
			// its (missing) addresses do not decide the family.
			name: "a veth rail among HCA rails",
			rails: []RailStatus{
				ncclRail(1, "mlx5_3", "10.0.1.1/31", "fd00:0:0:1::1/64", 3, 5),
				ncclRail(0, "mlx5_0", "10.0.0.1/31", "fd00:0:0:0::1/64", 3, 5),
				{Rail: 2, Netdev: "veth2", IPv6: "fd00:0:0:2::1/64", GIDIndexIPv4: -1, GIDIndexIPv6: -1},
			},
			tos:   &tos,
			want:  hdr + "NCCL_IB_HCA==mlx5_0:1,mlx5_3:1\n" + v4 + "NCCL_IB_ADDR_RANGE=10.0.0.0/23\n" + rv2 + "NCCL_IB_GID_INDEX=3\n" + tc,
			notes: []string{"rail 2 (veth2) has no RDMA device: left out of NCCL_IB_HCA"},
		},
		{
			name: "only veth rails",
			rails: []RailStatus{
				{Rail: 1, Netdev: "rail1", IPv4: "10.0.1.1/31", GIDIndexIPv4: -1, GIDIndexIPv6: -1},
				{Rail: 0, IPv4: "10.0.0.1/31", GIDIndexIPv4: -1, GIDIndexIPv6: -1},
			},
			tos:  &tos,
			want: hdr + tc,
			notes: []string{
				"rail 0 has no RDMA device: left out of NCCL_IB_HCA",
				"rail 1 (rail1) has no RDMA device: left out of NCCL_IB_HCA",
				"NCCL_IB_HCA left out: no rail has an RDMA device, so NCCL picks its devices itself",
			},
		},
		{
			name: "no rails",
			want: hdr,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]RailStatus(nil), c.rails...)
			got, notes := NCCLEnv(c.rails, c.tos)
			if string(got) != c.want {
				t.Errorf("env:\n%s\nwant:\n%s", got, c.want)
			}
			if !reflect.DeepEqual(notes, c.notes) {
				t.Errorf("notes:\n%q\nwant:\n%q", notes, c.notes)
			}
			if !reflect.DeepEqual(in, c.rails) {
				t.Error("NCCLEnv changed its input")
			}
			// Deterministic: the same rails in another order, the same bytes.
			rev := append([]RailStatus(nil), c.rails...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			if again, _ := NCCLEnv(rev, c.tos); string(again) != string(got) {
				t.Errorf("reversed rails:\n%s", again)
			}
		})
	}
}

func TestNCCLEnvHeader(t *testing.T) {
	got, _ := NCCLEnv(ncclEightRails()[:1], nil)
	want := "# Generated by roce-agent from the rail status: do not edit, it is rewritten when the rails change.\n" +
		"NCCL_IB_HCA==mlx5_0:1\nNCCL_IB_ADDR_FAMILY=AF_INET\nNCCL_IB_ADDR_RANGE=10.0.0.1/32\nNCCL_IB_ROCE_VERSION_NUM=2\nNCCL_IB_GID_INDEX=3\n"
	if string(got) != want {
		t.Errorf("env:\n%s", got)
	}
}

func TestNCCLCoveringPrefix(t *testing.T) {
	for _, c := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"10.0.0.1/31", "10.0.7.1/31"}, "10.0.0.0/21"},
		{[]string{"10.0.0.1", "10.0.0.1"}, "10.0.0.1/32"},
		{[]string{"10.0.0.1/31", "138.0.0.1/31"}, "0.0.0.0/0"},
		{[]string{"fd00::1/64", "fd00::1:1/64"}, "fd00::/111"},
		{[]string{"fe80::1%eth0", "fe80::2"}, "fe80::/126"},
	} {
		var rails []RailStatus
		for i, a := range c.addrs {
			r := ncclRail(i, fmt.Sprintf("mlx5_%d", i), "", "", -1, -1)
			if len(a) > 0 && a[0] == 'f' {
				r.IPv6 = a
			} else {
				r.IPv4 = a
			}
			rails = append(rails, r)
		}
		fam := ncclFamilies[0]
		if rails[0].IPv4 == "" {
			fam = ncclFamilies[1]
		}
		var addrs []netip.Addr
		for _, r := range rails {
			a, ok := fam.addr(r)
			if !ok {
				t.Fatalf("%v: %s not read", c.addrs, r.IPv4+r.IPv6)
			}
			addrs = append(addrs, a)
		}
		if got := ncclCoveringPrefix(addrs).String(); got != c.want {
			t.Errorf("%v: %s, want %s", c.addrs, got, c.want)
		}
	}
}

func TestNCCLWriteIfChanged(t *testing.T) {
	got, _ := NCCLEnv(ncclEightRails(), nil)
	path := filepath.Join(t.TempDir(), NCCLEnvFile)
	if changed, err := writeIfChanged(path, got); !changed || err != nil {
		t.Fatal(changed, err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if changed, err := writeIfChanged(path, got); changed || err != nil {
		t.Fatal(changed, err)
	}
	if st, _ := os.Stat(path); !st.ModTime().Equal(old) {
		t.Error("unchanged env file was rewritten")
	}
}
