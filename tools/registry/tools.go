//go:build tools

// Package tools pins the command built from this module so `go mod tidy`
// keeps its dependencies in go.sum.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
)
