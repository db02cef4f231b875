//go:build tools

// Pins the tools' modules in go.mod.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)
