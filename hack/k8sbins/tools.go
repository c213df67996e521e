//go:build tools

// Package k8sbins pins the upstream control-plane main packages so that
// `go mod tidy` records their dependencies; hack/k8sbins.sh builds them.
package k8sbins

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
