package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults of an embedded etcd member.
const (
	// DefaultQuotaBytes is the backend quota: a fabric's plan, statuses
	// and leases fit many times over; past it etcd turns read-only.
	DefaultQuotaBytes = 4 << 30
	// DefaultCompactionRetention keeps an hour of history (periodic
	// compaction, etcd then compacts every 6 minutes): enough for a watch
	// to catch up after a restart. Ten minutes (a compaction every minute)
	// stalled writes and lease renewals for seconds at 10,000 agents.
	DefaultCompactionRetention = "1h"
	// DefaultSnapshotCount is how many applied entries trigger a snapshot,
	// after which the raft log kept in memory is cut to
	// snapshotCatchUpEntries: etcd's default. 10,000 (with the one-minute
	// compaction) made p99 3-5 s at 10,000 agents; the cost is memory: the
	// last 100,000 writes (statuses are stored gzipped, ~3 KB) stay in the
	// raft log.
	DefaultSnapshotCount = 100000
	// snapshotCatchUpEntries are the entries kept after a snapshot for a
	// slow follower (etcd's default is 5,000).
	snapshotCatchUpEntries = 2000
	// memberReadyTimeout bounds the wait for a member to join its cluster.
	memberReadyTimeout = 60 * time.Second
	// DefaultMemberName names a member that was given no name.
	DefaultMemberName = "roce-controller"
	// maxSocketPath is the longest unix socket path (sun_path less NUL).
	maxSocketPath = 107
)

// MemberConfig is one embedded etcd member. A single member for one
// controller needs only DataDir: it then listens on unix sockets inside
// DataDir (client.sock, peer.sock; in a private temporary directory when
// DataDir's path is too long for a socket), reachable by nobody but this
// user.
type MemberConfig struct {
	// Name is the member's name in InitialCluster (default
	// DefaultMemberName).
	Name    string
	DataDir string
	// ListenClient and ListenPeer are URLs (http://127.0.0.1:2379,
	// unix:///path); empty: the sockets in DataDir.
	ListenClient []string
	ListenPeer   []string
	// InitialCluster is "name=peerURL,..." (empty: this member alone).
	InitialCluster string
	// ClusterState is "new" (default) or "existing".
	ClusterState string
	// QuotaBytes is the backend quota (0: DefaultQuotaBytes).
	QuotaBytes int64
	// Logger receives etcd's log, at Warn and above unless Debug.
	Logger *slog.Logger
	Debug  bool
}

// Member is a running embedded etcd member.
type Member struct {
	cleanup   func()
	etcd      *embed.Etcd
	clients   []string
	closing   *atomic.Bool
	closeOnce sync.Once
}

// StartMember starts an embedded etcd member and waits until it serves
// (with a cluster, until the cluster has a leader).
func StartMember(ctx context.Context, mc MemberConfig) (*Member, error) {
	if mc.DataDir == "" {
		return nil, errors.New("etcd member: data dir is empty")
	}
	if err := os.MkdirAll(mc.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd data dir: %w", err)
	}
	abs, err := filepath.Abs(mc.DataDir)
	if err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = DefaultMemberName
	if mc.Name != "" {
		cfg.Name = mc.Name
	}
	cfg.Dir = filepath.Join(abs, "member-data")
	// The default sockets go in the data dir or, when its path is too
	// long for a socket, in a private (0700) temporary directory.
	sockDir, tmpSockDir := abs, ""
	if (len(mc.ListenClient) == 0 || len(mc.ListenPeer) == 0) && len(filepath.Join(abs, "client.sock")) > maxSocketPath {
		if tmpSockDir, err = os.MkdirTemp("", "roce-etcd-"); err != nil {
			return nil, fmt.Errorf("etcd socket dir: %w", err)
		}
		sockDir = tmpSockDir
	}
	removeSockDir := func() {
		if tmpSockDir != "" {
			os.RemoveAll(tmpSockDir)
		}
	}
	clientURLs := mc.ListenClient
	if len(clientURLs) == 0 {
		clientURLs = []string{"unix://" + filepath.Join(sockDir, "client.sock")}
	}
	peerURLs := mc.ListenPeer
	if len(peerURLs) == 0 {
		peerURLs = []string{"unix://" + filepath.Join(sockDir, "peer.sock")}
	}
	ok := false
	defer func() {
		if !ok {
			removeSockDir()
		}
	}()
	if cfg.ListenClientUrls, err = parseURLs("listen client", clientURLs); err != nil {
		return nil, err
	}
	if cfg.ListenPeerUrls, err = parseURLs("listen peer", peerURLs); err != nil {
		return nil, err
	}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	for _, u := range append(append([]url.URL(nil), cfg.ListenClientUrls...), cfg.ListenPeerUrls...) {
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			path := u.Host + u.Path
			if len(path) > maxSocketPath {
				return nil, fmt.Errorf("etcd socket %s: longer than %d bytes (use a shorter data dir)", path, maxSocketPath)
			}
			// A socket left by a killed member would refuse the bind.
			_ = os.Remove(path)
		}
	}
	cfg.InitialCluster = mc.InitialCluster
	if cfg.InitialCluster != "" {
		if _, err := ParseInitialCluster(cfg.InitialCluster); err != nil {
			return nil, err
		}
	} else {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.ClusterState = embed.ClusterStateFlagNew
	if mc.ClusterState != "" {
		cfg.ClusterState = mc.ClusterState
	}
	cfg.QuotaBackendBytes = mc.QuotaBytes
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBytes
	}
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = DefaultCompactionRetention
	cfg.SnapshotCount = DefaultSnapshotCount
	cfg.SnapshotCatchUpEntries = snapshotCatchUpEntries
	closing := new(atomic.Bool)
	log := mc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	level := zapcore.WarnLevel
	if mc.Debug {
		level = zapcore.DebugLevel
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&slogCore{log: log.With("component", "etcd"), level: level, quiet: closing}))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", cfg.Name, err)
	}
	timer := time.NewTimer(memberReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd member %s: %w", cfg.Name, err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("start etcd member %s: not ready after %v (are the other members of %s up?)", cfg.Name, memberReadyTimeout, cfg.InitialCluster)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start etcd member %s: %w", cfg.Name, ctx.Err())
	}
	ok = true
	m := &Member{etcd: e, closing: closing, cleanup: removeSockDir}
	for _, u := range cfg.ListenClientUrls {
		m.clients = append(m.clients, u.String())
	}
	return m, nil
}

func parseURLs(what string, list []string) ([]url.URL, error) {
	var out []url.URL
	for _, s := range list {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s url %q: %w", what, s, err)
		}
		switch u.Scheme {
		case "http", "https", "unix", "unixs":
		default:
			return nil, fmt.Errorf("%s url %q: scheme must be http, https, unix or unixs", what, s)
		}
		out = append(out, *u)
	}
	return out, nil
}

// Endpoints are the member's client URLs.
func (m *Member) Endpoints() []string { return m.clients }

// Err delivers a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Close stops the member cleanly (its pending requests drain first).
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		m.etcd.Close()
		m.cleanup()
	})
}

// ParseInitialCluster checks "name=peerURL,..." and returns the names.
// The peers of a cluster of several members talk over http or https
// (etcd's peer transport cannot dial a unix socket path).
func ParseInitialCluster(s string) ([]string, error) {
	var names []string
	var unix bool
	parts := strings.Split(s, ",")
	for _, part := range parts {
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want name=peerURL", part)
		}
		us, err := parseURLs("peer", []string{u})
		if err != nil {
			return nil, err
		}
		unix = unix || us[0].Scheme == "unix" || us[0].Scheme == "unixs"
		names = append(names, name)
	}
	if unix && len(parts) > 1 {
		return nil, fmt.Errorf("initial cluster %s: the peers of several members need http or https URLs, not unix sockets", s)
	}
	return names, nil
}

// ClientConfig is how the controller reaches etcd.
type ClientConfig struct {
	Endpoints []string
	// TLS is for https endpoints (nil: plain).
	TLS    *tls.Config
	Logger *slog.Logger
}

// NewClient connects to etcd. It does not wait for a connection: the
// store's readiness says whether etcd answers.
func NewClient(cc ClientConfig) (*clientv3.Client, error) {
	if len(cc.Endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints")
	}
	log := cc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cc.Endpoints,
		TLS:                  cc.TLS,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.New(&slogCore{log: log.With("component", "etcd-client"), level: zapcore.ErrorLevel, quiet: new(atomic.Bool)}),
		// gRPC's reconnect backoff grows to 2 minutes by default: etcd
		// back after an outage would wait that long for the controller.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cc.Endpoints, ","), err)
	}
	return cli, nil
}

// slogCore is a zap core that writes to a slog logger, so that etcd's
// log joins the controller's. Once quiet is set (the member is closing)
// every record goes to Debug: shutdown errors are expected then.
type slogCore struct {
	log   *slog.Logger
	level zapcore.Level
	quiet *atomic.Bool
	attrs []any
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	n := *c
	n.attrs = append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)
	return &n
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// etcdNoise are warnings etcd gives about choices made here on purpose
// (one port for gRPC and HTTP, no etcd authentication); they log at Debug.
var etcdNoise = []string{
	"Running http and grpc server on single port",
	"simple token is not cryptographically signed",
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slog.LevelDebug
	switch {
	case c.quiet.Load():
	case slices.ContainsFunc(etcdNoise, func(n string) bool { return strings.HasPrefix(e.Message, n) }):
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	case e.Level == zapcore.InfoLevel:
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, e.Message, append(append([]any(nil), c.attrs...), fieldAttrs(fields)...)...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func fieldAttrs(fields []zapcore.Field) []any {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		out = append(out, k, enc.Fields[k])
	}
	return out
}
