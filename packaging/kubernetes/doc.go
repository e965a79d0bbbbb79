// Package kubernetes holds the tests of the Kubernetes packaging: the Helm
// chart in ../helm/roce-agent, rendered with helm as a library for several
// value sets and decoded strictly into the Kubernetes and Prometheus
// Operator types, the plain manifest daemonset.yaml generated from it, and
// the agent's acceptance of the rendered config. It is a module of its own
// so that the agent's go.mod does not carry helm and the Kubernetes API.
package kubernetes
