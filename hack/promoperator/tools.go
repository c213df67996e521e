//go:build tools

// Package promoperator pins the Prometheus Operator and its config reloader, built from the Go module
// proxy by hack/promoperator.sh: the node tier runs them so that Prometheus finds the trainer pods
// through the chart's PodMonitor and ServiceMonitor.
package promoperator

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
