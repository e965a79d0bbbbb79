// Package rxe is the soft-RoCE test tier: the built roce-agent in two qemu
// guests (Debian's kernel, rdma_rxe, TCG) that exchange real RoCEv2
// traffic over a routed leaf path, each guest taking its config from a
// roce-controller on the host.
//
// Each guest is one GPU host and its leaf switch: rxe0 on rail0 in the
// root namespace, rail0's veth peer in a "leaf" namespace that routes to
// the other guest's leaf over a qemu stream link (MTU 9000), and a slirp
// NIC that reaches the controller at 10.0.2.2. The guests mount the host's
// root filesystem read-only over virtio-9p, so the host's perftest,
// rdma-core and the freshly built binaries run in them; lab/rxe/ holds the
// scripts (prepare.sh installs the packages and builds the initramfs,
// boot.sh boots one guest, guest-init, guest-driver and guest-peer run in
// it).
//
// TestSoftRoCE runs only with ROCE_RXE=1 (make test-rxe), as root; it
// skips with prepare.sh's message when a package or the kernel cannot be
// had. ROCE_RXE_KEEP=1 keeps the run directory (consoles, agent logs, every
// tool output) and logs its path. RXE_WORK moves the cache
// (/var/cache/roce-agent-rxe). lab/rxe/README.md has the other knobs and
// what the tier found.
package rxe
