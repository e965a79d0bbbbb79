// Package linkengine converges each rail netdev's L3 state over netlink,
// one network namespace at a time: the link up with its MTU, per-interface
// sysctls, a /31 and a /127 host address, and a routing table of its own
// selected by a source rule. It plans from the live state (Plan, PlanLinks),
// applies in dependency order (Engine.Reconcile), removes only what it owns
// (routes and rules marked protocol 171 in its ranges, addresses marked
// IFA_PROTO 171), and tears down on request (Engine.Teardown).
//
// Host is the real namespace; the RailHost interface lets tests use the
// recording fake in linktest. Reading sysfs is package nic's job.
package linkengine
