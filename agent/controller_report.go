package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/roce-agent/roce-agent/api/v1"
)

// reportState is what the reporter last delivered, and the report
// failures in force (for logging their transitions).
type reportState struct {
	sentKey [sha256.Size]byte
	sentAt  time.Time
	failing map[string]string // op -> the class of failure logged
}

// Report sends the heartbeat (PUT /v1/nodes/{node}/lease) every
// heartbeat_interval, and the status (PUT /v1/nodes/{node}/status) when
// its content changed and at least every status_interval, until ctx ends.
// status gives the node's status, nil before the first reconcile (then
// only the heartbeat goes). A status the controller did not take is sent
// again at the next heartbeat.
func (s *ControllerSource) Report(ctx context.Context, status func() *v1.NodeStatus) {
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	st := status()
	s.sendLease(ctx, st)
	s.sendStatus(ctx, st)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st := status()
			s.sendLease(ctx, st)
			s.sendStatus(ctx, st)
		case <-s.nudge:
			s.sendStatus(ctx, status())
		}
	}
}

// StatusChanged tells the reporter to look at the status again (after a
// reconcile, or when ControllerConnected changes).
func (s *ControllerSource) StatusChanged() {
	select {
	case s.nudge <- struct{}{}:
	default:
	}
}

// statusKey identifies a status by its content: the time of the last
// reconcile is left out, so a resync that changed nothing sends nothing
// (conditions keep their transition times).
func statusKey(st *v1.NodeStatus) ([sha256.Size]byte, []byte, error) {
	body, err := json.Marshal(st)
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	c := *st
	c.LastReconcile = time.Time{}
	b, err := json.Marshal(&c)
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	return sha256.Sum256(b), body, nil
}

func (s *ControllerSource) sendStatus(ctx context.Context, st *v1.NodeStatus) {
	if st == nil {
		return
	}
	key, body, err := statusKey(st)
	if err != nil {
		s.log.Error("encode the node status", "err", err)
		return
	}
	s.mu.Lock()
	due := key != s.report.sentKey || time.Since(s.report.sentAt) >= s.statusEvery
	s.mu.Unlock()
	if !due {
		return
	}
	if s.put(ctx, "status", body) != nil {
		return
	}
	s.mu.Lock()
	s.report.sentKey, s.report.sentAt = key, time.Now()
	s.mu.Unlock()
}

func (s *ControllerSource) sendLease(ctx context.Context, st *v1.NodeStatus) {
	hb := v1.Heartbeat{}
	if st != nil {
		hb.AppliedGeneration = st.AppliedGeneration
	}
	body, err := json.Marshal(hb)
	if err != nil {
		return
	}
	_ = s.put(ctx, "lease", body)
}

// put sends one of the node's resources; 2xx is success. A transport
// error or a 5xx moves to the next controller replica, if any.
func (s *ControllerSource) put(ctx context.Context, op string, body []byte) error {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	base := s.base()
	target := s.url(op)
	req, err := s.newRequest(rctx, http.MethodPut, target, body)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.metrics.request(op, resultTransport)
		s.failover(base)
		err = requestError(http.MethodPut, target, err)
		s.reportFailed(op, err)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.metrics.request(op, resultHTTPError)
		if resp.StatusCode >= 500 {
			s.failover(base)
		}
		err = fmt.Errorf("put %s: %w", target, answerError(resp))
		s.reportFailed(op, err)
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	s.metrics.request(op, resultOK)
	s.contact()
	select {
	case s.retryNow <- struct{}{}:
	default:
	}
	s.reportFailed(op, nil)
	return nil
}

// reportFailed logs a report the controller refuses when that starts or
// changes (by HTTP status) and once when it works again. A controller
// that does not answer is the config loop's to log.
func (s *ControllerSource) reportFailed(op string, err error) {
	class := ""
	var herr *httpError
	if errors.As(err, &herr) {
		class = fmt.Sprint(herr.code)
	}
	s.mu.Lock()
	if s.report.failing == nil {
		s.report.failing = map[string]string{}
	}
	was := s.report.failing[op]
	if err != nil && class == "" {
		class = was // unreachable: no news about the report itself
	}
	s.report.failing[op] = class
	s.mu.Unlock()
	switch {
	case class == was:
	case class == "":
		s.log.Info("controller takes the node's reports again", "op", op)
	default:
		s.log.Warn("controller refuses the node's report", "op", op, "err", err)
	}
}

// controllerMetrics are the controller client's metrics.
type controllerMetrics struct {
	connected   prometheus.Gauge
	generation  prometheus.Gauge
	lastContact prometheus.Gauge
	requests    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
}

func newControllerMetrics() *controllerMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Subsystem: "controller", Name: name, Help: help}
	}
	m := &controllerMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts(opts("connected",
			"Whether the controller serves the config in use (1), or is unreachable, refuses the node or sent a config that was rejected (0)."))),
		generation: prometheus.NewGauge(prometheus.GaugeOpts(opts("config_generation",
			"Generation of the controller config in use (the last good one, from the controller or state_dir)."))),
		lastContact: prometheus.NewGauge(prometheus.GaugeOpts(opts("last_contact_timestamp_seconds",
			"When the controller last answered a request successfully, in Unix seconds (0: never)."))),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
			"Requests to the controller by operation (config, status, lease) and result (ok, not_modified, rejected, http_error, transport_error).")), []string{"op", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts(opts("config_rejected_total",
			"Configs from the controller refused (the last good config kept), by reason.")), []string{"reason"}),
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	return m
}

func (m *controllerMetrics) request(op, result string) { m.requests.WithLabelValues(op, result).Inc() }

// Collectors are the controller client's metrics, for the daemon's
// registry.
func (s *ControllerSource) Collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.connected, m.generation, m.lastContact, m.requests, m.rejected}
}
