# The two commands of the README: `make run` and `make test`. Everything else is a step of those.
.PHONY: run test test-node setup tools k8sbins kueue nodebins nodedeps node-images nodeparts lint unit manifests cluster node images kind-e2e

setup:
	hack/setup.sh

# The main job: a 2-node CPU/gloo TrainingJob run locally as processes (no cluster needed).
run: setup
	.venv/bin/torchjob run --fresh examples/cpu-gloo-2node.yaml

tools:
	hack/tools.sh

k8sbins:
	hack/k8sbins.sh

# Kueue's manager for the Kueue integration tests (built once per version from the Go module proxy).
kueue:
	hack/kueue.sh

# The real node's parts: Debian packages, then kubelet/kube-proxy/CoreDNS (and the Prometheus Operator) from
# the Go module proxy, then both images (cached per content hash). `nodeparts` is all of them (root only).
nodeparts:
	hack/nodeparts.sh

nodedeps:
	hack/nodedeps.sh

nodebins:
	hack/nodebins.sh
	hack/promoperator.sh

node-images: nodedeps
	hack/images.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

unit: setup
	.venv/bin/pytest -m unit

manifests: setup tools
	.venv/bin/python hack/gen-manifests.py
	hack/gen-chart-readme.sh

# The whole suite: unit, real control plane (etcd, kube-apiserver, scheduler, controller-manager, KWOK),
# real torchrun processes, real helm/promtool/prometheus; then tests/e2e on a real kubelet node with both
# images and the chart (marker `node`; it skips with the reason where the machine cannot run a node, e.g.
# not root; CI sets TORCHJOB_REQUIRE_NODE=1 so that it cannot skip). GPU tests are opt-in.
test: setup tools k8sbins kueue nodeparts lint
	OMP_NUM_THREADS=1 .venv/bin/pytest -m "not node"
	OMP_NUM_THREADS=1 .venv/bin/pytest -m node --node

# The real-node tier alone (needs root). TORCHJOB_REQUIRE_NODE=1: fail rather than skip.
test-node: setup tools k8sbins nodeparts
	TORCHJOB_REQUIRE_NODE=1 OMP_NUM_THREADS=1 .venv/bin/pytest -m node --node

# A local control plane for poking at the operator with kubectl (Ctrl-C stops it).
cluster: setup k8sbins
	hack/cluster.sh up

# The same control plane plus a real node with both images and the chart (Ctrl-C stops and cleans up).
node: setup tools k8sbins nodedeps nodebins
	hack/node.sh up --chart

# Both images (operator without torch, trainer without kopf); needs a Docker engine.
images: setup
	hack/build-images.sh

# The kind path for people with Docker and kind: cluster, images, helm install, 2-node CPU job, teardown.
kind-e2e: setup tools
	hack/kind-e2e.sh
