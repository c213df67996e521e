//go:build tools

// Package nodebins pins the upstream node main packages (kubelet, kube-proxy) of the same Kubernetes
// version as hack/k8sbins, so `go mod tidy` records their dependencies; hack/nodebins.sh builds them.
// A sibling module rather than more tools in hack/k8sbins: the control-plane build and its cache key
// stay untouched, and the kubelet's extra dependencies (cadvisor, runc's libcontainer) stay out of it.
package nodebins

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
