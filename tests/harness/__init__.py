"""A real local Kubernetes control plane for the cluster test tier.

etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kwok run as local processes on free
127.0.0.1 ports (see `controlplane.ControlPlane`); fake KWOK nodes (`nodes`) advertise `nvidia.com/gpu`.
The binaries come from `hack/k8sbins.sh` (`binaries`).
"""
