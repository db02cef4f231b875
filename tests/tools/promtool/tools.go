//go:build tools

// Pins promtool's module in go.mod (its own module: Prometheus' Kubernetes and
// OpenTelemetry versions need not agree with helm's in ../go.mod).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
