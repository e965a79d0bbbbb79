package probe

// This file decides whom a rail probes and when. The agent probes each rail
// NIC against the same rail of the other members of its tenant with real
// ib_write_bw / ib_write_lat / rping runs over the routed L3 RoCE fabric. A
// tenant can have a thousand members, and probing all of them every interval
// would make a host's cost grow with its tenant and flood the fabric with
// line-rate bandwidth tests. So each rail probes k peers per interval
// (probes.peers_per_interval), rotating through the tenant:
//
//   - Rotation says which k peers a rail probes in round i, so that every
//     pair is covered in ceil((N-1)/k) rounds and every node is also probed
//     by exactly k others per round: the per-host cost is k tests started
//     and k served per interval, whatever N is.
//   - Starts spreads a round's probes over the interval with a random phase,
//     so the fleet does not start its bandwidth tests in lock step.
//   - RetryAfter and ShouldDefer say what to do when a peer answers busy: a
//     NIC runs at most one test at a time, client or server, because two
//     concurrent ib_write_bw runs on one NIC would each report about half the
//     line rate and the probe would flag a healthy link. The peer's agent
//     answers HTTP 409 with a Retry-After hint while its NIC is in a test; the
//     prober retries a few times with jitter, then defers the peer to the
//     next round, where Next probes it first.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Rotation is the probe schedule of one rail of one node: the ring of its
// tenant's members (its peers and itself, sorted by name) and k, the number
// of peers it probes per round. Every member of a tenant computes its own
// Rotation from the same member set (or from a symmetric window of the same
// name-ordered ring), and all of them use the same round number for the same
// interval (for example the wall-clock time divided by the interval), so
// that the rounds fit together: in round i every member probes the members
// at the same ring offsets from itself, hence every member is also probed by
// exactly k members per round.
//
// A Rotation is immutable and safe for concurrent use.
type Rotation struct {
	self    string
	members []string // peers and self, sorted by name: the ring
	pos     int      // self's index in members
	k       int
}

// NewRotation returns the rotation of self over peers, probing k peers per
// round. k must be at least 1, self must not be empty, and peers must be
// non-empty names without self and without duplicates; the error names the
// offending value. The order of peers does not matter: the ring is sorted
// by name so that every member builds the same ring. An empty peer list is
// valid (a tenant of one): every round is empty.
func NewRotation(self string, peers []string, k int) (*Rotation, error) {
	if k < 1 {
		return nil, fmt.Errorf("probe schedule: peers per interval must be at least 1, got %d", k)
	}
	if self == "" {
		return nil, errors.New("probe schedule: self name is empty")
	}
	members := make([]string, 0, len(peers)+1)
	for i, p := range peers {
		switch p {
		case "":
			return nil, fmt.Errorf("probe schedule: peer %d has an empty name", i)
		case self:
			return nil, fmt.Errorf("probe schedule: peer %q is self", p)
		}
		members = append(members, p)
	}
	members = append(members, self)
	slices.Sort(members)
	for i := 1; i < len(members); i++ {
		if members[i] == members[i-1] {
			return nil, fmt.Errorf("probe schedule: peer %q is listed twice", members[i])
		}
	}
	pos, _ := slices.BinarySearch(members, self)
	return &Rotation{self: self, members: members, pos: pos, k: k}, nil
}

// Self returns the name the rotation was built for.
func (r *Rotation) Self() string { return r.self }

// K returns the number of peers probed per round.
func (r *Rotation) K() int { return r.k }

// Peers returns the number of peers (tenant members other than self).
func (r *Rotation) Peers() int { return len(r.members) - 1 }

// Rounds returns ceil((N-1)/k), the number of consecutive rounds, starting
// at any round, in which every peer is probed at least once (N is the
// number of members, self included). It is 0 when there are no peers and 1
// when k >= N-1 (every peer every round).
func (r *Rotation) Rounds() int {
	m := r.Peers()
	return (m + r.k - 1) / r.k
}

// Round returns the distinct peers probed in round i: min(k, N-1) of them,
// nil when there are no peers. With m = N-1 and p self's ring position, the
// j-th peer (j < k) is at ring position p + 1 + ((i*k + j) mod m) mod N. The
// offsets of rounds i, i+1, ..., i+Rounds()-1 are Rounds()*k >= m
// consecutive integers mod m, so they cover every peer from any start
// round. All members use the same offsets in a round, so member q is probed
// by the members at q minus each offset: exactly min(k, N-1) of them.
func (r *Rotation) Round(i uint64) []string {
	m := uint64(r.Peers())
	if m == 0 {
		return nil
	}
	n := min(uint64(r.k), m)
	base := (i % m) * (uint64(r.k) % m) % m // i*k mod m without overflow
	N := uint64(len(r.members))
	out := make([]string, 0, n)
	for j := range n {
		off := 1 + (base+j)%m
		out = append(out, r.members[(uint64(r.pos)+off)%N])
	}
	return out
}

// Next returns the peers to probe in round i, in order: first the deferred
// peers (those that stayed busy in the previous round, see ShouldDefer),
// then Round(i), without duplicates. Deferred names that are self or no
// longer members (the tenant changed) are dropped, and at most k deferred
// peers are carried, so a round has at most 2k probes.
//
// Deferred peers are added on top of the round's own k peers rather than
// in their place: a cap of k would push the displaced peers of round i out
// of their turn, and since every round has k peers of its own such a
// backlog would never drain, delaying coverage for good. Added on top, a
// deferred peer is probed one round late and nobody else is delayed, so
// every pair is still covered within Rounds()+1 consecutive rounds, as long
// as a peer is not busy through all retries of two rounds in a row (then
// it is deferred again and probed first in each following round until it
// answers). The cost stays bounded independently of the tenant size: a
// deferral needs a peer busy for a whole retry sequence, which is rare
// when every NIC is in a test for a small share of the interval.
func (r *Rotation) Next(i uint64, deferred []string) []string {
	round := r.Round(i)
	out := make([]string, 0, len(round)+min(len(deferred), r.k))
	carried := 0
	for _, d := range deferred {
		if carried == r.k {
			break
		}
		if d == r.self || slices.Contains(out, d) {
			continue
		}
		if _, ok := slices.BinarySearch(r.members, d); !ok {
			continue
		}
		out = append(out, d)
		carried++
	}
	for _, p := range round {
		if !slices.Contains(out[:carried], p) {
			out = append(out, p)
		}
	}
	return out
}

// Starts returns n start offsets in [0, interval), sorted ascending, for
// the n probes of one round: evenly spaced interval/n apart after a random
// phase in [0, interval/n). The random phase desynchronizes the fleet (every
// node and every round draws its own), so the tenant's bandwidth tests do
// not all start at the top of the interval, and the even spacing keeps a
// node's own tests as far apart as possible, so they do not queue behind
// each other on its NIC. A nil rnd uses the math/rand/v2 global source.
// n <= 0 gives nil; interval <= 0 gives n zeros.
func Starts(interval time.Duration, n int, rnd *rand.Rand) []time.Duration {
	if n <= 0 {
		return nil
	}
	out := make([]time.Duration, n)
	if interval <= 0 {
		return out
	}
	slot := interval / time.Duration(n)
	var phase time.Duration
	if slot > 0 {
		phase = time.Duration(int64n(rnd, int64(slot)))
	}
	q, rem := interval/time.Duration(n), interval%time.Duration(n)
	for j := range out {
		d := time.Duration(j)
		// j*interval/n, split so that it cannot overflow.
		out[j] = phase + q*d + rem*d/time.Duration(n)
	}
	return out
}

const (
	// MaxBusyRetries is how many times a prober retries a peer that
	// answered busy (HTTP 409) within one round before deferring it to the
	// next round (see ShouldDefer and Rotation.Next).
	MaxBusyRetries = 5

	// DefaultBusyHint is the wait used when a busy answer carries no
	// usable Retry-After hint.
	DefaultBusyHint = 5 * time.Second

	// MaxRetryJitter bounds the random part of a busy retry's wait.
	MaxRetryJitter = 30 * time.Second

	// MaxRetryWait bounds a busy retry's whole wait, so a bogus hint
	// cannot park a peer for long.
	MaxRetryWait = 60 * time.Second
)

// RetryAfter returns how long to wait before retrying a peer that answered
// busy for the attempt-th time in this round (attempt counts the busy
// answers so far, from 1): the peer's Retry-After hint (DefaultBusyHint when
// hint <= 0), which is when its NIC's current test should end, plus a
// random jitter in [0, min(2^attempt s, MaxRetryJitter)), all capped at
// MaxRetryWait. The jitter keeps probers that were turned away by the same
// test from coming back at the same instant and colliding again; it grows
// with the attempt because repeated collisions mean a contended NIC. A nil
// rnd uses the math/rand/v2 global source.
func RetryAfter(hint time.Duration, attempt int, rnd *rand.Rand) time.Duration {
	if hint <= 0 {
		hint = DefaultBusyHint
	}
	attempt = max(attempt, 1)
	spread := MaxRetryJitter
	if attempt < 16 {
		spread = min(time.Second<<attempt, MaxRetryJitter)
	}
	wait := hint + time.Duration(int64n(rnd, int64(spread)))
	if wait > MaxRetryWait || wait < 0 {
		wait = MaxRetryWait
	}
	return wait
}

// ShouldDefer reports whether the prober gives up on a busy peer for this
// round and carries it to the next (Rotation.Next probes it first there):
// after attempt busy answers, when attempt exceeds MaxBusyRetries, or when
// the retry, wait from now, would not start before the round ends (left is
// the time from now to the end of the round's interval). Giving up at the
// round's end rather than retrying into the next round keeps a deferral
// exactly one round long, which is what bounds coverage by Rounds()+1.
func ShouldDefer(attempt int, wait, left time.Duration) bool {
	return attempt > MaxBusyRetries || wait >= left
}

func int64n(rnd *rand.Rand, n int64) int64 {
	if n <= 0 {
		return 0
	}
	if rnd == nil {
		return rand.Int64N(n)
	}
	return rnd.Int64N(n)
}
