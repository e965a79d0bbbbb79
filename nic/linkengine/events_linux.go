package linkengine

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kinds of event SubscribeRuleAndNetconfEvents reports.
const (
	// EventRule is a policy routing rule added or deleted (RTM_NEWRULE,
	// RTM_DELRULE), IPv4 or IPv6.
	EventRule = "rule"
	// EventNetconf is a per-interface or namespace-wide configuration
	// change (RTM_NEWNETCONF, RTM_DELNETCONF). On Linux 6.18 the kernel
	// announces changes of rp_filter, forwarding, proxy_arp/proxy_ndp,
	// mc_forwarding and ignore_routes_with_linkdown, and the creation and
	// removal of an interface; it does not announce arp_ignore,
	// arp_announce, accept_local, accept_ra, keep_addr_on_down or
	// disable_ipv6, nor a write that leaves the value unchanged.
	EventNetconf = "netconf"
	// EventOverrun means the socket's receive buffer overflowed and the
	// kernel dropped notifications: the caller must assume anything
	// changed and reconcile in full. The subscription goes on.
	EventOverrun = "overrun"
)

// ruleNetconfGroups are the rtnetlink multicast groups joined. All are
// below 32, so nl.Subscribe's 32-bit bind mask (which silently drops
// groups above 32) holds them.
var ruleNetconfGroups = []uint{
	unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE,
	unix.RTNLGRP_IPV4_NETCONF, unix.RTNLGRP_IPV6_NETCONF,
}

// SubscribeRuleAndNetconfEvents watches ns for policy routing rule and
// netconf changes, which vishvananda/netlink has no subscription for, so
// that a deleted rule or a changed rp_filter triggers a reconcile at once
// instead of at the next resync.
//
// ns is the namespace to watch; a closed handle (netns.None()) means the
// calling thread's own namespace, and then no setns is done, so only
// CAP_NET_ADMIN (not CAP_SYS_ADMIN) is needed. An open handle is entered
// with setns for the socket's creation only (CAP_SYS_ADMIN).
//
// Once the socket is subscribed it returns; a goroutine then calls onEvent
// with EventRule for each RTM_NEWRULE/RTM_DELRULE, EventNetconf for each
// RTM_NEWNETCONF/RTM_DELNETCONF, and EventOverrun when the receive buffer
// overflowed (ENOBUFS; the subscription continues). onEvent runs on that
// goroutine and should return quickly (e.g. a non-blocking send of a
// trigger). onError, which may be nil, gets receive errors: each one
// that does not end the subscription (a datagram that failed to arrive or
// to parse, followed by EventOverrun) and the one that ends it, the 10th
// failure in a row. Closing done closes the socket and ends the goroutine
// promptly, whether or not events arrive; nothing is reported after done
// is closed.
func SubscribeRuleAndNetconfEvents(ns netns.NsHandle, done <-chan struct{}, onEvent func(kind string), onError func(error)) error {
	_, err := subscribeRuleAndNetconf(ns, done, onEvent, onError)
	return err
}

// eventSub is a running subscription, for tests.
type eventSub struct {
	sock *nl.NetlinkSocket
	// finished is closed when the socket is closed and both goroutines
	// have returned.
	finished chan struct{}
}

func subscribeRuleAndNetconf(ns netns.NsHandle, done <-chan struct{}, onEvent func(kind string), onError func(error)) (*eventSub, error) {
	var (
		sock *nl.NetlinkSocket
		err  error
	)
	if ns.IsOpen() {
		sock, err = nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, ruleNetconfGroups...)
	} else {
		sock, err = nl.Subscribe(unix.NETLINK_ROUTE, ruleNetconfGroups...)
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe to rule and netconf events: %w", err)
	}
	sub := &eventSub{sock: sock, finished: make(chan struct{})}
	stopped := make(chan struct{}) // the receiver returned on its own
	closed := make(chan struct{})  // the socket is closed
	// Receive blocks in Go's poller; closing the socket from here wakes it
	// up with an error, and the poller defers the close(2) until Receive
	// has let go of the descriptor, so the fd cannot be reused under it.
	go func() {
		defer close(closed)
		select {
		case <-done:
		case <-stopped:
		}
		sock.Close()
	}()
	go func() {
		defer func() {
			close(stopped)
			<-closed
			close(sub.finished)
		}()
		receiveRuleAndNetconf(sock, done, onEvent, onError)
	}()
	return sub, nil
}

// maxReceiveFailures is how many receive errors in a row (other than
// ENOBUFS, EINTR and EAGAIN) end the subscription.
const maxReceiveFailures = 10

// receiveRuleAndNetconf reads notifications until the socket fails or is
// closed.
func receiveRuleAndNetconf(sock *nl.NetlinkSocket, done <-chan struct{}, onEvent func(string), onError func(error)) {
	isDone := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	report := func(err error) {
		if onError != nil && !isDone() {
			onError(err)
		}
	}
	failures := 0
	for {
		msgs, from, err := sock.Receive()
		if isDone() {
			return
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOBUFS):
				onEvent(EventOverrun)
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			default:
				// A datagram that did not parse is consumed and the socket
				// is sound, but a notification may be lost. A socket that
				// keeps failing is broken: give up rather than spin.
				failures++
				if failures >= maxReceiveFailures {
					report(fmt.Errorf("receive rule and netconf events: giving up after %d failures: %w", failures, err))
					return
				}
				report(fmt.Errorf("receive rule and netconf events: %w", err))
				onEvent(EventOverrun)
			}
			continue
		}
		failures = 0
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			var kind string
			switch m.Header.Type {
			case unix.RTM_NEWRULE, unix.RTM_DELRULE:
				kind = EventRule
			case unix.RTM_NEWNETCONF, unix.RTM_DELNETCONF:
				kind = EventNetconf
			default:
				continue
			}
			if isDone() {
				return
			}
			onEvent(kind)
		}
	}
}
