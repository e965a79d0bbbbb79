// Package lab builds a multi-tenant RoCEv2 fabric in network namespaces,
// for roce-lab and end-to-end tests (docs/lab.md):
//
//   - hosts: one namespace each, with DGX-like veth rails (the netdev names
//     and MACs of a fixture sysfs tree written for the host, whose GID
//     tables hold the planned rail addresses), left down and unaddressed
//     for the agent, and mgmt0 on a management bridge;
//   - leaves: an underlay namespace (the VTEP) routed through a spine
//     namespace, one namespace per tenant (the VRF: this kernel has no VRF
//     device) holding the leaf ends of the tenant's rails and the tenant's
//     L3 VNI device, and a parking namespace for rails without a tenant;
//   - EVPN Type-5 state written statically, as zebra would install it:
//     remote rail prefixes routed over the VXLAN device to the remote
//     VTEP, with permanent neighbour and fdb entries for the remote
//     router MAC;
//   - with lldpd installed, an lldpd in every host namespace and every
//     leaf namespace with leaf ports, for the agents' LLDP cabling check
//     against the plan's cabling; SwapRails miscables two rails.
//
// Up builds the topology, Sync makes the leaves follow a changed plan,
// Down (or Cleanup, after a crash) removes it. Start runs the reference
// controller and one agent per host in it; the agents probe their rails'
// peers over the rails with stand-ins for the RDMA tools (WriteFakeTools:
// the lab has no RDMA device).
package lab
