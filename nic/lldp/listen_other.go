//go:build !linux

package lldp

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var errNoPacketSocket = errors.New("listening for LLDP frames needs Linux (AF_PACKET)")

// Socket needs Linux.
type Socket struct{}

// OpenSocket needs Linux.
func OpenSocket(netdev string) (*Socket, error) {
	return nil, fmt.Errorf("lldp listen %s: %w", netdev, errNoPacketSocket)
}

// Next needs Linux.
func (s *Socket) Next(ctx context.Context, deadline time.Time) (Neighbor, error) {
	return Neighbor{}, errNoPacketSocket
}

// Close needs Linux.
func (s *Socket) Close() error { return nil }

// Listen needs Linux.
func Listen(ctx context.Context, netdev string, wait time.Duration) (Neighbor, error) {
	return Neighbor{}, fmt.Errorf("lldp listen %s: %w", netdev, errNoPacketSocket)
}

// Watch needs Linux.
func Watch(ctx context.Context, netdev string, fn func(Neighbor)) error {
	return fmt.Errorf("lldp listen %s: %w", netdev, errNoPacketSocket)
}
