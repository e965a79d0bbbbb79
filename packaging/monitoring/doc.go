// Package monitoring holds no code: its tests check the Grafana dashboards
// (packaging/grafana) and the Prometheus rules (packaging/prometheus)
// against the metrics the agent and the controller export.
package monitoring
