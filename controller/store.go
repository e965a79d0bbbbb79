package controller

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/roce-agent/roce-agent/api/v1"
	"github.com/roce-agent/roce-agent/fabric"
)

// Store defaults.
const (
	DefaultPrefix        = "/roce/v1"
	DefaultLeaseTTL      = 30 * time.Second
	DefaultCheckInterval = time.Second
)

const (
	// changeRetries bounds a plan change's read-modify-write attempts.
	changeRetries = 32
	// txnOps is etcd's default limit of operations in one transaction.
	txnOps = 128
	// rpcParallel bounds the concurrent etcd calls of one request.
	rpcParallel = 32
	// checkTimeout bounds a readiness check.
	checkTimeout = time.Second
	// etcdGrace is how long etcd may go without answering anything
	// (readiness check, status or heartbeat write, plan read) before the
	// store is not ready: a check that is merely slow under load, with
	// writes still going through, does not make etcd unreachable.
	etcdGrace = 5 * time.Second
	// lagChecks is how many readiness checks in a row may see a plan
	// revision the watch has not delivered before the store is not ready.
	lagChecks = 3
	// appliedWait bounds how long a change waits for its own revision to
	// arrive through the watch (read-your-writes on this replica).
	appliedWait = 5 * time.Second
	// maxPlanBytes bounds a decompressed plan record.
	maxPlanBytes = 256 << 20
)

// Availability errors (503): the store cannot answer now.
var (
	ErrNotReady    = errors.New("controller is not ready")
	ErrUnavailable = errors.New("etcd is unavailable")
)

// StoreConfig configures a Store.
type StoreConfig struct {
	Client *clientv3.Client
	// Prefix of every key (default DefaultPrefix).
	Prefix string
	// LeaseTTL is how long a node stays alive after a heartbeat (whole
	// seconds, default DefaultLeaseTTL).
	LeaseTTL time.Duration
	// CheckInterval is the period of the readiness check, a linearizable
	// read (default DefaultCheckInterval).
	CheckInterval time.Duration
	Logger        *slog.Logger
}

// Store keeps the fabric in etcd: one key holds the plan with its epoch
// and every node's generation (JSON, gzip), one key per node its last
// status and when it came, one leased key per node its liveness.
//
// Every replica watches the plan key and keeps the plan in memory,
// indexed (fabric.NewFabric) when its revision changes; a node's config is
// derived on first request and kept while its generation stays. Replicas
// hold no state the others need. A long-poll subscribes to its node and is
// woken when a revision changes that node's generation.
type Store struct {
	cli        *clientv3.Client
	prefix     string
	planKey    string
	ttl        int64
	checkEvery time.Duration
	log        *slog.Logger
	now        func() time.Time

	state atomic.Pointer[planState]

	mu      sync.Mutex
	waiters map[string]chan struct{}
	applied chan struct{}
	pending pendingFabric

	// changeMu serializes this replica's plan changes (others are
	// caught by the ModRevision guard).
	changeMu sync.Mutex

	etcdOK  atomic.Bool
	lastOK  atomic.Int64 // unix nanoseconds of etcd's last answer
	hold    atomic.Pointer[string]
	synced  atomic.Bool
	lagging atomic.Bool
	lag     int
	resync  chan struct{}

	leaseMu sync.Mutex
	leases  map[string]leaseCache

	changes   atomic.Uint64
	conflicts atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// planRecord is the value of the plan key.
type planRecord struct {
	Plan        v1.FabricPlan    `json:"plan"`
	Epoch       int64            `json:"epoch"`
	Generations map[string]int64 `json:"generations"`
}

// planState is a replica's view of one revision of the plan key.
type planState struct {
	// rev is the revision of the last event applied; keyRev the plan
	// key's ModRevision (0: absent).
	rev    int64
	keyRev int64
	// fabric is nil when there is no plan (problem says why).
	fabric      *fabric.Fabric
	problem     string
	epoch       int64
	generations map[string]int64
	tenants     map[string]int
	// served has every node; a config is derived when first asked for.
	served map[string]*servedConfig
}

// servedConfig is a node's config as served. It is derived from fabric on
// first use, then its JSON made, once; a later revision that leaves the
// node's generation alone keeps the derived entry.
type servedConfig struct {
	name       string
	generation int64
	etag       string
	fabric     *fabric.Fabric
	once       sync.Once
	marshal    sync.Once
	derived    atomic.Bool
	cfg        v1.NodeConfig
	body       []byte
	err        error
}

func newServed(f *fabric.Fabric, name string, gen int64) *servedConfig {
	return &servedConfig{name: name, generation: gen, etag: ETag(gen), fabric: f}
}

// seededServed is a node's served config already derived (its JSON is
// made on first use).
func seededServed(cfg v1.NodeConfig, name string, gen int64) *servedConfig {
	c := &servedConfig{name: name, generation: gen, etag: ETag(gen)}
	cfg.Generation = gen
	c.once.Do(func() {
		c.cfg = cfg
		c.derived.Store(true)
	})
	return c
}

func (c *servedConfig) derive() {
	c.once.Do(func() {
		cfg, ok := c.fabric.Config(c.name)
		if !ok {
			c.err = fmt.Errorf("derive config of %s: not in the plan", c.name)
		} else {
			cfg.Generation = c.generation
			c.cfg = cfg
		}
		c.fabric = nil
		c.derived.Store(true)
	})
}

// config is the node's config, decoded from its JSON (only the JSON is
// kept).
func (c *servedConfig) config() (v1.NodeConfig, error) {
	body, err := c.json()
	if err != nil {
		return v1.NodeConfig{}, err
	}
	var cfg v1.NodeConfig
	if err := json.Unmarshal(body, &cfg); err != nil {
		return v1.NodeConfig{}, fmt.Errorf("config of %s: %w", c.name, err)
	}
	return cfg, nil
}

// json is the node's config as JSON, made once; the derived struct is
// dropped then (a long-poll storm after a move marshals each changed
// config once, whatever the number of waiters).
func (c *servedConfig) json() ([]byte, error) {
	c.derive()
	c.marshal.Do(func() {
		if c.err == nil && c.body == nil {
			c.body, c.err = json.Marshal(c.cfg)
		}
		c.cfg = v1.NodeConfig{}
	})
	return c.body, c.err
}

// ETag is the entity tag of a generation.
func ETag(generation int64) string { return `"g` + strconv.FormatInt(generation, 10) + `"` }

// pendingFabric is the indexed plan of this replica's last write, for
// the watch to use when that value arrives (set before the write, so
// that the watch cannot come first).
type pendingFabric struct {
	data   []byte
	rec    planRecord
	fabric *fabric.Fabric
	// configs are the new configs of the nodes that changed (Generation
	// 0), derived while finding them.
	configs map[string]v1.NodeConfig
}

type leaseCache struct {
	id      clientv3.LeaseID
	applied int64
}

// aliveRecord is the value of a node's leased liveness key.
type aliveRecord struct {
	Lease             int64 `json:"lease"`
	AppliedGeneration int64 `json:"applied_generation"`
}

// reportRecord is the small key written with each status, so that the
// node list reads no statuses.
type reportRecord struct {
	Reported          time.Time `json:"reported"`
	AppliedGeneration int64     `json:"applied_generation"`
}

// NewStore starts a store: its plan watch and its readiness check run
// until Close. It does not wait for etcd (Ready, WaitReady).
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("store: no etcd client")
	}
	prefix := strings.TrimRight(cfg.Prefix, "/")
	if cfg.Prefix == "" {
		prefix = DefaultPrefix
	}
	if prefix == "" {
		return nil, fmt.Errorf("store: key prefix %q is empty", cfg.Prefix)
	}
	ttl := cfg.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs < 2 {
		return nil, fmt.Errorf("store: lease ttl %v is below 2s", ttl)
	}
	every := cfg.CheckInterval
	if every <= 0 {
		every = DefaultCheckInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cli:        cfg.Client,
		prefix:     prefix,
		planKey:    prefix + "/plan",
		ttl:        secs,
		checkEvery: every,
		log:        log.With("component", "store"),
		now:        time.Now,
		waiters:    map[string]chan struct{}{},
		applied:    make(chan struct{}),
		resync:     make(chan struct{}, 1),
		leases:     map[string]leaseCache{},
	}
	s.state.Store(&planState{problem: "the plan watch has not started"})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.watchLoop(ctx) }()
	go func() { defer s.wg.Done(); s.checkLoop(ctx) }()
	return s, nil
}

// Close stops the watch and the readiness check; the client stays open.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

// Prefix is the key prefix.
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) statusKey(node string) string { return s.prefix + "/status/" + node }
func (s *Store) reportKey(node string) string { return s.prefix + "/report/" + node }
func (s *Store) aliveKey(node string) string  { return s.prefix + "/alive/" + node }

// Ready is nil when the store serves fresh data: etcd answered the last
// linearizable check, the plan watch is synced and a plan is stored.
// Otherwise it says why, wrapping ErrNotReady.
func (s *Store) Ready() error {
	st := s.state.Load()
	switch {
	case !s.etcdOK.Load():
		return fmt.Errorf("%w: etcd is unreachable", ErrNotReady)
	case !s.synced.Load():
		return fmt.Errorf("%w: the plan watch is not synced", ErrNotReady)
	case s.lagging.Load():
		return fmt.Errorf("%w: the plan watch lags behind etcd", ErrNotReady)
	case s.hold.Load() != nil:
		return fmt.Errorf("%w: %s", ErrNotReady, *s.hold.Load())
	case st.fabric == nil:
		return fmt.Errorf("%w: %s", ErrNotReady, st.problem)
	}
	return nil
}

// Hold makes the store not ready, for reason, until Release: serve holds
// it while it stores the plan of --plan, so that the plan being replaced
// is not served as the current one.
func (s *Store) Hold(reason string) { s.hold.Store(&reason) }

// Release ends Hold.
func (s *Store) Release() { s.hold.Store(nil) }

// EtcdOK reports whether etcd answered the last readiness check.
func (s *Store) EtcdOK() bool { return s.etcdOK.Load() }

// WaitReady waits until Ready is nil, or returns its last answer when ctx
// ends.
func (s *Store) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := s.Ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
		}
	}
}

// Epoch is the epoch of the plan this replica serves (0: none).
func (s *Store) Epoch() int64 { return s.state.Load().epoch }

// Changes counts the plan changes this replica wrote.
func (s *Store) Changes() uint64 { return s.changes.Load() }

// Conflicts counts the plan writes this replica retried because another
// writer came first.
func (s *Store) Conflicts() uint64 { return s.conflicts.Load() }

// ---------------------------------------------------------------- plan

func encodeRecord(r planRecord) ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := json.NewEncoder(zw).Encode(r); err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress plan: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeRecord(b []byte) (planRecord, error) {
	var r planRecord
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return r, fmt.Errorf("decompress plan: %w", err)
	}
	dec := json.NewDecoder(io.LimitReader(zr, maxPlanBytes))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("decode plan: %w", err)
	}
	return r, nil
}

// buildState indexes a plan record; prev (may be nil) lends the configs
// it has derived for nodes whose generation stays. f, when not nil, is
// the record's plan already indexed.
func buildState(rev int64, rec planRecord, f *fabric.Fabric, prev *planState) (*planState, error) {
	return buildStateSeeded(rev, rec, f, prev, nil)
}

// buildStateSeeded is buildState; seeds are configs already derived
// from f, by node (Generation 0).
func buildStateSeeded(rev int64, rec planRecord, f *fabric.Fabric, prev *planState, seeds map[string]v1.NodeConfig) (*planState, error) {
	if f == nil {
		var err error
		if f, err = fabric.NewFabric(rec.Plan); err != nil {
			return nil, fmt.Errorf("index plan: %w", err)
		}
	}
	p := f.Plan()
	st := &planState{
		rev:         rev,
		keyRev:      rev,
		fabric:      f,
		epoch:       rec.Epoch,
		generations: rec.Generations,
		tenants:     make(map[string]int, len(p.Tenants)),
		served:      make(map[string]*servedConfig, len(p.Nodes)),
	}
	if st.generations == nil {
		st.generations = map[string]int64{}
	}
	for _, n := range p.Nodes {
		g, ok := st.generations[n.Name]
		if !ok {
			g = rec.Epoch
			st.generations[n.Name] = g
		}
		if prev != nil && prev.fabric != nil {
			if old, ok := prev.served[n.Name]; ok && old.generation == g && old.derived.Load() {
				st.served[n.Name] = old
				continue
			}
		}
		if cfg, ok := seeds[n.Name]; ok {
			st.served[n.Name] = seededServed(cfg, n.Name, g)
			continue
		}
		st.served[n.Name] = newServed(f, n.Name, g)
	}
	for i, t := range p.Tenants {
		st.tenants[t.ID] = i
	}
	return st, nil
}

// applyState makes st the served state and wakes the long-polls of every
// node whose generation it changes.
func (s *Store) applyState(st *planState) {
	old := s.state.Swap(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	for node, ch := range s.waiters {
		og, oOK := old.generations[node]
		ng, nOK := st.generations[node]
		if old.fabric == nil || st.fabric == nil || og != ng || oOK != nOK {
			close(ch)
			delete(s.waiters, node)
		}
	}
	close(s.applied)
	s.applied = make(chan struct{})
}

// subscribe returns a channel closed when the node's generation changes
// (or the plan goes away). Subscribe before reading the state.
func (s *Store) subscribe(node string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.waiters[node]
	if !ok {
		ch = make(chan struct{})
		s.waiters[node] = ch
	}
	return ch
}

// applyKV applies the plan key as read or watched (kv nil: absent).
func (s *Store) applyKV(kv *mvccpb.KeyValue, rev int64) {
	if kv == nil {
		s.applyState(&planState{rev: rev, problem: "no fabric plan is stored (start roce-controller with --plan FILE)"})
		return
	}
	// The change that wrote this revision here has indexed its plan (and
	// derived the configs that changed).
	var pending pendingFabric
	s.mu.Lock()
	if s.pending.fabric != nil && bytes.Equal(s.pending.data, kv.Value) {
		pending = s.pending
		s.pending = pendingFabric{}
	}
	s.mu.Unlock()
	rec, err := pending.rec, error(nil)
	if pending.fabric == nil {
		rec, err = decodeRecord(kv.Value)
	}
	var st *planState
	if err == nil {
		st, err = buildStateSeeded(kv.ModRevision, rec, pending.fabric, s.state.Load(), pending.configs)
	}
	if err != nil {
		s.log.Error("stored plan is unusable", "revision", kv.ModRevision, "err", err)
		s.applyState(&planState{rev: kv.ModRevision, keyRev: kv.ModRevision, problem: "the stored plan is unusable: " + err.Error()})
		return
	}
	s.log.Info("plan revision applied", "revision", kv.ModRevision, "epoch", st.epoch, "nodes", len(st.served), "tenants", len(st.tenants))
	s.applyState(st)
}

// watchLoop reads the plan key, then watches it, starting over whenever
// the watch ends (etcd gone, leader lost, history compacted) or the
// readiness check finds it behind.
func (s *Store) watchLoop(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if err := s.watchOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("plan watch restarts", "err", err, "backoff", backoff)
		}
		s.synced.Store(false)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (s *Store) watchOnce(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := s.cli.Get(gctx, s.planKey)
	cancel()
	if err != nil {
		return fmt.Errorf("read plan: %w", err)
	}
	var kv *mvccpb.KeyValue
	if len(resp.Kvs) > 0 {
		kv = resp.Kvs[0]
	}
	s.applyKV(kv, resp.Header.Revision)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := s.cli.Watch(wctx, s.planKey, clientv3.WithRev(resp.Header.Revision+1))
	s.synced.Store(true)
	s.lagging.Store(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.resync:
			return errors.New("the readiness check found the watch behind")
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch plan: %w", err)
			}
			if len(wr.Events) == 0 {
				continue
			}
			// Generations only grow, so the last event of a batch
			// shows every change of the ones before it.
			ev := wr.Events[len(wr.Events)-1]
			if ev.Type == clientv3.EventTypeDelete {
				s.applyKV(nil, ev.Kv.ModRevision)
				continue
			}
			s.applyKV(ev.Kv, ev.Kv.ModRevision)
		}
	}
}

// checkLoop is the readiness check: a linearizable read of the plan key
// every CheckInterval.
func (s *Store) checkLoop(ctx context.Context) {
	t := time.NewTicker(s.checkEvery)
	defer t.Stop()
	for {
		s.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, max(checkTimeout, s.checkEvery))
	resp, err := s.cli.Get(cctx, s.planKey, clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		// Unreachable only when nothing has come from etcd for a while:
		// under load a check can be slow while writes go through.
		if ctx.Err() == nil && time.Since(time.Unix(0, s.lastOK.Load())) > s.grace() && s.etcdOK.Swap(false) {
			s.log.Warn("etcd is unreachable: not ready", "err", err, "last_answer", time.Unix(0, s.lastOK.Load()))
		}
		return
	}
	s.answered()
	if !s.etcdOK.Swap(true) {
		s.log.Info("etcd answers")
	}
	var keyRev int64
	if len(resp.Kvs) > 0 {
		keyRev = resp.Kvs[0].ModRevision
	}
	if st := s.state.Load(); !s.synced.Load() || st.keyRev >= keyRev {
		s.lag = 0
		s.lagging.Store(false)
		return
	}
	s.lag++
	if s.lag >= lagChecks && !s.lagging.Swap(true) {
		s.log.Warn("the plan watch lags behind etcd: not ready, restarting it", "revision", keyRev, "served_revision", s.state.Load().keyRev)
		select {
		case s.resync <- struct{}{}:
		default:
		}
	}
}

// answered notes that etcd answered a call.
func (s *Store) answered() { s.lastOK.Store(time.Now().UnixNano()) }

// grace is how long etcd may be silent before it counts as unreachable.
func (s *Store) grace() time.Duration { return max(etcdGrace, 3*s.checkEvery) }

// waitApplied waits until the watch has applied revision rev.
func (s *Store) waitApplied(ctx context.Context, rev int64) {
	timer := time.NewTimer(appliedWait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ch := s.applied
		s.mu.Unlock()
		if s.state.Load().rev >= rev {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timer.C:
			s.log.Warn("a plan change did not come back through the watch in time", "revision", rev)
			return
		}
	}
}

func unavailable(what string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}

// change is the one way the plan changes: read the plan key, apply fn,
// find the nodes whose configs change (ChangedNodes: only the candidates
// are derived), give them the new epoch as generation, and write the key
// back if it is still at the revision read (else retry). It returns the
// nodes whose configs changed, sorted.
func (s *Store) change(ctx context.Context, what string, fn func(cur *v1.FabricPlan) (v1.FabricPlan, error)) ([]string, error) {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	for range changeRetries {
		// The plan's revision first: the value only when this replica
		// does not serve that revision.
		resp, err := s.cli.Get(ctx, s.planKey, clientv3.WithKeysOnly())
		if err != nil {
			return nil, unavailable("read plan", err)
		}
		s.answered()
		if st := s.state.Load(); len(resp.Kvs) > 0 && (st.fabric == nil || st.keyRev != resp.Kvs[0].ModRevision) {
			if resp, err = s.cli.Get(ctx, s.planKey); err != nil {
				return nil, unavailable("read plan", err)
			}
		}
		var (
			modRev int64
			old    = &planState{}
		)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			modRev = kv.ModRevision
			if st := s.state.Load(); st.fabric != nil && st.keyRev == modRev {
				old = st
			} else {
				rec, err := decodeRecord(kv.Value)
				if err == nil {
					old, err = buildState(modRev, rec, nil, nil)
				}
				if err != nil {
					// Only a new plan replaces an unusable one. Its epoch
					// starts past every epoch the old one can have had
					// (each plan write takes at least one revision).
					s.log.Warn("the stored plan is unusable", "revision", modRev, "err", err)
					old = &planState{epoch: modRev}
				}
			}
		}
		var cur *v1.FabricPlan
		if old.fabric != nil {
			p := old.fabric.Plan()
			cur = &p
		}
		next, err := fn(cur)
		if err != nil {
			return nil, err
		}
		nf, err := fabric.NewFabricFrom(next, old.fabric)
		if err != nil {
			return nil, err
		}
		changed, configs := fabric.ChangedConfigs(old.fabric, nf)
		if changed == nil {
			changed = []string{}
		}
		if old.fabric != nil && len(changed) == 0 && samePlan(old.fabric.Plan(), nf.Plan()) {
			return changed, nil
		}
		rec := planRecord{Plan: nf.Plan(), Epoch: old.epoch + 1, Generations: make(map[string]int64, len(nf.Plan().Nodes))}
		for _, n := range nf.Plan().Nodes {
			if g, ok := old.generations[n.Name]; ok {
				rec.Generations[n.Name] = g
			} else {
				rec.Generations[n.Name] = rec.Epoch
			}
		}
		for _, name := range changed {
			if _, ok := rec.Generations[name]; ok {
				rec.Generations[name] = rec.Epoch
			}
		}
		data, err := encodeRecord(rec)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.pending = pendingFabric{data: data, rec: rec, fabric: nf, configs: configs}
		s.mu.Unlock()
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.planKey), "=", modRev)).
			Then(clientv3.OpPut(s.planKey, string(data))).
			Commit()
		if err != nil || !tr.Succeeded {
			s.mu.Lock()
			s.pending = pendingFabric{}
			s.mu.Unlock()
		}
		if errors.Is(err, rpctypes.ErrRequestTooLarge) {
			return nil, fmt.Errorf("write plan: the plan is %d bytes compressed, more than etcd accepts in one request (raise its --max-request-bytes): %w", len(data), err)
		}
		if err != nil {
			return nil, unavailable("write plan", err)
		}
		s.answered()
		if !tr.Succeeded {
			s.conflicts.Add(1)
			continue
		}
		s.changes.Add(1)
		s.log.Info("plan changed", "change", what, "epoch", rec.Epoch, "revision", tr.Header.Revision, "changed_nodes", len(changed), "bytes", len(data))
		s.waitApplied(ctx, tr.Header.Revision)
		return changed, nil
	}
	return nil, fmt.Errorf("change plan: %d conflicting writes in a row: %w", changeRetries, ErrUnavailable)
}

func samePlan(a, b v1.FabricPlan) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// LoadPlan stores a plan, replacing the stored one: only the nodes whose
// configs change get a new generation. It returns them.
func (s *Store) LoadPlan(ctx context.Context, p v1.FabricPlan) ([]string, error) {
	if err := fabric.CheckPlan(fabric.Defaults(p)); err != nil {
		return nil, err
	}
	return s.change(ctx, "load plan", func(*v1.FabricPlan) (v1.FabricPlan, error) { return p, nil })
}

// ErrPlanStored is SeedPlan's answer when a plan is stored already.
var ErrPlanStored = errors.New("a plan is stored already")

// SeedPlan stores a plan only when none is stored: the plan file seeds a
// fabric, and tenant changes made through the API afterwards are not
// undone by a restart with the same file. ErrPlanStored says it kept the
// stored one.
func (s *Store) SeedPlan(ctx context.Context, p v1.FabricPlan) ([]string, error) {
	if err := fabric.CheckPlan(fabric.Defaults(p)); err != nil {
		return nil, err
	}
	return s.change(ctx, "seed plan", func(cur *v1.FabricPlan) (v1.FabricPlan, error) {
		if cur != nil {
			return v1.FabricPlan{}, ErrPlanStored
		}
		return p, nil
	})
}

// PutTenant creates or replaces a tenant.
func (s *Store) PutTenant(ctx context.Context, t v1.Tenant) ([]string, error) {
	return s.change(ctx, "put tenant "+t.ID, func(cur *v1.FabricPlan) (v1.FabricPlan, error) {
		if cur == nil {
			return v1.FabricPlan{}, ErrNotReady
		}
		return fabric.PutTenantUnchecked(*cur, t)
	})
}

// Move moves a node or some of its GPUs to a tenant.
func (s *Store) Move(ctx context.Context, m v1.Move) ([]string, error) {
	what := "move " + m.Node
	if m.Node == "" {
		what = fmt.Sprintf("move %d nodes", len(m.Nodes))
	}
	return s.change(ctx, what, func(cur *v1.FabricPlan) (v1.FabricPlan, error) {
		if cur == nil {
			return v1.FabricPlan{}, ErrNotReady
		}
		return fabric.ApplyMoveUnchecked(*cur, m)
	})
}

// ready returns the served state, or why there is none to serve.
func (s *Store) ready() (*planState, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	return s.state.Load(), nil
}

// node returns the served state if it has the node.
func (s *Store) node(name string) (*planState, error) {
	st, err := s.ready()
	if err != nil {
		return nil, err
	}
	if _, ok := st.served[name]; !ok {
		return nil, &fabric.NotFoundError{What: "node " + name}
	}
	return st, nil
}

// Config returns a node's config as served.
func (s *Store) Config(node string) (v1.NodeConfig, error) {
	st, err := s.node(node)
	if err != nil {
		return v1.NodeConfig{}, err
	}
	return st.served[node].config()
}

// Tenant returns a tenant of the plan.
func (s *Store) Tenant(id string) (v1.Tenant, error) {
	st, err := s.ready()
	if err != nil {
		return v1.Tenant{}, err
	}
	i, ok := st.tenants[id]
	if !ok {
		return v1.Tenant{}, &fabric.NotFoundError{What: "tenant " + id}
	}
	return st.fabric.Plan().Tenants[i], nil
}

// -------------------------------------------------------------- status

// PutStatus stores a node's status (one transaction: the status and the
// small record of when it came).
func (s *Store) PutStatus(ctx context.Context, st v1.NodeStatus) error {
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", st.Node, err)
	}
	body, err := compressStatus(js)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", st.Node, err)
	}
	return s.putStatusStored(ctx, st, body)
}

// putStatusStored is PutStatus with the stored value made
// (compressStatus of the status's JSON, such as a request body that
// decoded into st strictly).
func (s *Store) putStatusStored(ctx context.Context, st v1.NodeStatus, body []byte) error {
	if _, err := s.node(st.Node); err != nil {
		return err
	}
	rep, err := json.Marshal(reportRecord{Reported: s.now().UTC(), AppliedGeneration: st.AppliedGeneration})
	if err != nil {
		return fmt.Errorf("encode report of %s: %w", st.Node, err)
	}
	if _, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.statusKey(st.Node), string(body)),
		clientv3.OpPut(s.reportKey(st.Node), string(rep)),
	).Commit(); err != nil {
		return unavailable("write status of "+st.Node, err)
	}
	s.answered()
	return nil
}

// Statuses are stored as gzip-compressed JSON: a status with a full
// inventory is tens of kilobytes of repetitive JSON, and every version
// stays in etcd's history until compaction. Plain JSON (as written by
// earlier versions) is read too.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

func compressStatus(js []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(js)/4 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(js); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decodeStatus(b []byte, out *v1.NodeStatus) error {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return json.Unmarshal(b, out)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return json.NewDecoder(io.LimitReader(zr, 4*MaxStatusBody)).Decode(out)
}

// Status returns a node's last status.
func (s *Store) Status(ctx context.Context, node string) (v1.NodeStatus, error) {
	var out v1.NodeStatus
	if _, err := s.node(node); err != nil {
		return out, err
	}
	resp, err := s.cli.Get(ctx, s.statusKey(node))
	if err != nil {
		return out, unavailable("read status of "+node, err)
	}
	if len(resp.Kvs) == 0 {
		return out, &fabric.NotFoundError{What: "status of node " + node}
	}
	if err := decodeStatus(resp.Kvs[0].Value, &out); err != nil {
		return out, fmt.Errorf("decode status of %s: %w", node, err)
	}
	return out, nil
}

// ------------------------------------------------------------ liveness

// Heartbeat renews a node's lease: a lease renewal, not a write, unless
// the lease is gone (a new one is granted and the liveness key put again)
// or the applied generation changed (the key is rewritten).
func (s *Store) Heartbeat(ctx context.Context, node string, hb v1.Heartbeat) error {
	if _, err := s.node(node); err != nil {
		return err
	}
	key := s.aliveKey(node)
	for range 3 {
		s.leaseMu.Lock()
		lc, ok := s.leases[node]
		s.leaseMu.Unlock()
		if !ok {
			resp, err := s.cli.Get(ctx, key)
			if err != nil {
				return unavailable("read liveness of "+node, err)
			}
			if len(resp.Kvs) > 0 && resp.Kvs[0].Lease != 0 {
				var rec aliveRecord
				_ = json.Unmarshal(resp.Kvs[0].Value, &rec) // unreadable: the key is rewritten
				lc, ok = leaseCache{id: clientv3.LeaseID(resp.Kvs[0].Lease), applied: rec.AppliedGeneration}, true
				if rec.Lease != resp.Kvs[0].Lease {
					lc.applied = -1
				}
			}
		}
		if ok {
			_, err := s.cli.KeepAliveOnce(ctx, lc.id)
			switch {
			case err == nil:
				s.answered()
				if lc.applied != hb.AppliedGeneration {
					// Rewrite the key only while it is still on this lease.
					rec, _ := json.Marshal(aliveRecord{Lease: int64(lc.id), AppliedGeneration: hb.AppliedGeneration})
					tr, err := s.cli.Txn(ctx).
						If(clientv3.Compare(clientv3.LeaseValue(key), "=", lc.id)).
						Then(clientv3.OpPut(key, string(rec), clientv3.WithLease(lc.id))).
						Commit()
					if err != nil {
						return unavailable("write liveness of "+node, err)
					}
					if !tr.Succeeded {
						s.forgetLease(node)
						continue
					}
					lc.applied = hb.AppliedGeneration
				}
				s.leaseMu.Lock()
				s.leases[node] = lc
				s.leaseMu.Unlock()
				return nil
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				s.forgetLease(node)
			default:
				return unavailable("renew lease of "+node, err)
			}
		}
		// No lease: grant one and put the key, unless another replica
		// did first (then use its lease). A key on no lease (absent, or
		// written by hand) is replaced.
		g, err := s.cli.Grant(ctx, s.ttl)
		if err != nil {
			return unavailable("grant lease to "+node, err)
		}
		rec, _ := json.Marshal(aliveRecord{Lease: int64(g.ID), AppliedGeneration: hb.AppliedGeneration})
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.NoLease)).
			Then(clientv3.OpPut(key, string(rec), clientv3.WithLease(g.ID))).
			Commit()
		if err != nil {
			return unavailable("write liveness of "+node, err)
		}
		if tr.Succeeded {
			s.leaseMu.Lock()
			s.leases[node] = leaseCache{id: g.ID, applied: hb.AppliedGeneration}
			s.leaseMu.Unlock()
			return nil
		}
		if _, err := s.cli.Revoke(ctx, g.ID); err != nil {
			s.log.Debug("revoke unused lease", "node", node, "err", err)
		}
	}
	return fmt.Errorf("renew lease of %s: the liveness key keeps changing: %w", node, ErrUnavailable)
}

func (s *Store) forgetLease(node string) {
	s.leaseMu.Lock()
	delete(s.leases, node)
	s.leaseMu.Unlock()
}

// lastHeartbeats asks etcd how long ago each lease was renewed: the
// lease's granted TTL less what remains (whole seconds, so up to a second
// early), a few calls at a time. A lease that is gone or expired is left
// out (not alive).
func (s *Store) lastHeartbeats(ctx context.Context, leases map[string]clientv3.LeaseID) (map[string]time.Time, error) {
	type result struct {
		node string
		t    time.Time
		ok   bool
		err  error
	}
	nodes := make(chan string)
	results := make(chan result)
	var wg sync.WaitGroup
	for range min(rpcParallel, len(leases)) {
		wg.Go(func() {
			for n := range nodes {
				r := result{node: n}
				resp, err := s.cli.TimeToLive(ctx, leases[n])
				switch {
				case errors.Is(err, rpctypes.ErrLeaseNotFound):
				case err != nil:
					r.err = err
				case resp.TTL >= 0:
					// TTL is whole seconds left (0 in the last second);
					// -1 is a lease that expired.
					r.ok = true
					r.t = s.now().Add(-time.Duration(resp.GrantedTTL-resp.TTL) * time.Second).UTC().Truncate(time.Second)
				}
				results <- r
			}
		})
	}
	go func() {
		defer close(nodes)
		for n := range leases {
			select {
			case nodes <- n:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	out := make(map[string]time.Time, len(leases))
	var firstErr error
	for r := range results {
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		if r.ok {
			out[r.node] = r.t
		}
	}
	if firstErr != nil {
		return nil, unavailable("read leases", firstErr)
	}
	if ctx.Err() != nil {
		return nil, unavailable("read leases", ctx.Err())
	}
	return out, nil
}

// Nodes lists every node of the plan, by name, with liveness, last
// heartbeat, generations and when it last reported: two range reads of
// small keys and one lease query per alive node.
func (s *Store) Nodes(ctx context.Context) (v1.NodeList, error) {
	st, err := s.ready()
	if err != nil {
		return v1.NodeList{}, err
	}
	tr, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.prefix+"/alive/", clientv3.WithPrefix()),
		clientv3.OpGet(s.prefix+"/report/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return v1.NodeList{}, unavailable("read liveness and reports", err)
	}
	leases := map[string]clientv3.LeaseID{}
	for _, kv := range tr.Responses[0].GetResponseRange().Kvs {
		node := strings.TrimPrefix(string(kv.Key), s.prefix+"/alive/")
		if _, ok := st.served[node]; ok {
			leases[node] = clientv3.LeaseID(kv.Lease)
		}
	}
	reports := map[string]reportRecord{}
	for _, kv := range tr.Responses[1].GetResponseRange().Kvs {
		var rec reportRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			reports[strings.TrimPrefix(string(kv.Key), s.prefix+"/report/")] = rec
		}
	}
	beats, err := s.lastHeartbeats(ctx, leases)
	if err != nil {
		return v1.NodeList{}, err
	}
	list := v1.NodeList{Nodes: make([]v1.NodeSummary, 0, len(st.served))}
	for _, name := range slices.Sorted(maps.Keys(st.served)) {
		pn, _ := st.fabric.Node(name)
		sum := v1.NodeSummary{Name: name, Index: pn.Index, ConfigGeneration: st.served[name].generation}
		if t, ok := beats[name]; ok {
			sum.Alive, sum.LastHeartbeat = true, &t
		}
		if rec, ok := reports[name]; ok {
			r := rec.Reported
			sum.Reported, sum.AppliedGeneration = &r, rec.AppliedGeneration
		}
		list.Nodes = append(list.Nodes, sum)
	}
	return list, nil
}

// NodeStates counts the plan's nodes by state: alive (lease held),
// silent (no lease, but a status once) and unreported (neither), from
// two keys-only range reads.
func (s *Store) NodeStates(ctx context.Context) (alive, silent, unreported int, err error) {
	st, err := s.ready()
	if err != nil {
		return 0, 0, 0, err
	}
	tr, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.prefix+"/alive/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.prefix+"/report/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return 0, 0, 0, unavailable("count nodes", err)
	}
	keys := func(i int, sub string) map[string]bool {
		m := map[string]bool{}
		for _, kv := range tr.Responses[i].GetResponseRange().Kvs {
			m[strings.TrimPrefix(string(kv.Key), s.prefix+sub)] = true
		}
		return m
	}
	aliveSet, reported := keys(0, "/alive/"), keys(1, "/report/")
	for name := range st.served {
		switch {
		case aliveSet[name]:
			alive++
		case reported[name]:
			silent++
		default:
			unreported++
		}
	}
	return alive, silent, unreported, nil
}

// TenantHealth is every member rail of a tenant with its node's liveness
// and what its last status says, and the rail-pair matrix of the probe
// results in those statuses (probePairs): statuses and liveness keys are
// read in transactions of up to 128 gets, a few at a time; the matrix
// costs no further read.
func (s *Store) TenantHealth(ctx context.Context, id string) (v1.TenantHealth, error) {
	st, err := s.ready()
	if err != nil {
		return v1.TenantHealth{}, err
	}
	ti, ok := st.tenants[id]
	if !ok {
		return v1.TenantHealth{}, &fabric.NotFoundError{What: "tenant " + id}
	}
	plan := st.fabric.Plan()
	tenant := plan.Tenants[ti]
	var nodes []string
	seen := map[string]bool{}
	for _, m := range tenant.Members {
		if !seen[m.Node] {
			seen[m.Node] = true
			nodes = append(nodes, m.Node)
		}
	}
	statuses, leases, err := s.readMembers(ctx, nodes)
	if err != nil {
		return v1.TenantHealth{}, err
	}
	beats, err := s.lastHeartbeats(ctx, leases)
	if err != nil {
		return v1.TenantHealth{}, err
	}
	out := v1.TenantHealth{Tenant: id, Rails: []v1.RailHealth{}}
	for _, m := range tenant.Members {
		rails := m.GPUs
		if len(rails) == 0 {
			rails = make([]int, plan.Rails)
			for i := range rails {
				rails[i] = i
			}
		}
		status, hasStatus := statuses[m.Node]
		var cfgGen int64
		if c, ok := st.served[m.Node]; ok {
			cfgGen = c.generation
		}
		for _, rail := range rails {
			rh := v1.RailHealth{Node: m.Node, Rail: rail, ConfigGeneration: cfgGen, Conditions: []v1.Condition{}}
			if t, ok := beats[m.Node]; ok {
				rh.Alive, rh.LastHeartbeat = true, &t
			}
			if hasStatus {
				rh.AppliedGeneration = status.AppliedGeneration
				for _, rs := range status.Rails {
					if rs.Rail != rail {
						continue
					}
					rh.Bound = rs.Tenant != nil && rs.Tenant.ID == id
					if rs.Conditions != nil {
						rh.Conditions = rs.Conditions
					}
					break
				}
			}
			if rh.Alive && rh.Bound && !slices.ContainsFunc(rh.Conditions, func(c v1.Condition) bool { return c.Status == v1.StatusFalse }) {
				out.Healthy++
			}
			out.Rails = append(out.Rails, rh)
		}
	}
	out.Total = len(out.Rails)
	out.Pairs = probePairs(nodes, statuses, func(node string, rail int) bool { return st.fabric.RailTenant(node, rail) == id })
	for _, p := range out.Pairs {
		if p.OK {
			out.PairsOK++
		}
	}
	out.PairsTotal = len(out.Pairs)
	return out, nil
}

// probePairs is a tenant's rail-pair matrix from the last statuses of its
// member nodes: the probe results whose both ends are member rails (by
// member), the last (latest time, else the later listed) per tool and
// family of each directed pair; pairs sorted by (node, rail, peer_node,
// peer_rail), results by tool and family. Never nil.
func probePairs(nodes []string, statuses map[string]v1.NodeStatus, member func(node string, rail int) bool) []v1.ProbePair {
	type pairKey struct {
		node     string
		rail     int
		peerNode string
		peerRail int
	}
	type toolKey struct{ tool, family string }
	last := map[pairKey]map[toolKey]v1.ProbeResult{}
	for _, n := range nodes {
		for _, r := range statuses[n].Probes {
			if !member(n, r.Rail) || !member(r.PeerNode, r.PeerRail) {
				continue
			}
			k := pairKey{n, r.Rail, r.PeerNode, r.PeerRail}
			byTool := last[k]
			if byTool == nil {
				byTool = map[toolKey]v1.ProbeResult{}
				last[k] = byTool
			}
			tk := toolKey{r.Tool, r.Family}
			if prev, ok := byTool[tk]; !ok || !r.Time.Before(prev.Time) {
				byTool[tk] = r
			}
		}
	}
	out := make([]v1.ProbePair, 0, len(last))
	for k, byTool := range last {
		p := v1.ProbePair{Node: k.node, Rail: k.rail, PeerNode: k.peerNode, PeerRail: k.peerRail, OK: true,
			Results: make([]v1.ProbeResult, 0, len(byTool))}
		for _, r := range byTool {
			if r.Error != "" || (r.Reachable != nil && !*r.Reachable) {
				p.OK = false
			}
			p.Results = append(p.Results, r)
		}
		slices.SortFunc(p.Results, func(a, b v1.ProbeResult) int {
			return cmp.Or(strings.Compare(a.Tool, b.Tool), strings.Compare(a.Family, b.Family))
		})
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b v1.ProbePair) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), cmp.Compare(a.Rail, b.Rail),
			strings.Compare(a.PeerNode, b.PeerNode), cmp.Compare(a.PeerRail, b.PeerRail))
	})
	return out
}

// readMembers reads the statuses and liveness keys of nodes in
// transactions of txnOps gets, rpcParallel/4 at a time.
func (s *Store) readMembers(ctx context.Context, nodes []string) (map[string]v1.NodeStatus, map[string]clientv3.LeaseID, error) {
	statuses := map[string]v1.NodeStatus{}
	leases := map[string]clientv3.LeaseID{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, rpcParallel/4))
	errs := make([]error, 0)
	for batch := range slices.Chunk(nodes, txnOps/2) {
		ops := make([]clientv3.Op, 0, 2*len(batch))
		for _, n := range batch {
			ops = append(ops, clientv3.OpGet(s.statusKey(n)), clientv3.OpGet(s.aliveKey(n)))
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tr, err := s.cli.Txn(ctx).Then(ops...).Commit()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for i, n := range batch {
				if kvs := tr.Responses[2*i].GetResponseRange().Kvs; len(kvs) > 0 {
					var ns v1.NodeStatus
					if err := decodeStatus(kvs[0].Value, &ns); err != nil {
						s.log.Warn("stored status is unreadable", "node", n, "err", err)
					} else {
						statuses[n] = ns
					}
				}
				if kvs := tr.Responses[2*i+1].GetResponseRange().Kvs; len(kvs) > 0 {
					leases[n] = clientv3.LeaseID(kvs[0].Lease)
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, nil, unavailable("read tenant members", errs[0])
	}
	return statuses, leases, nil
}
