"""The installed chart and examples/cpu-gloo-2node.yaml on real pods, run once and checked from several
sides while it trains and after it Succeeds: admission under the restricted Pod Security Standard,
rendezvous through the headless Service's DNS name, the pod's runtime contract (/dev/shm, uid, no token),
every rank's metrics, and `kubectl logs`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import jobs
from e2e.support import TIMEOUT, Cluster, Kubectl, progress
from harness import monitoring
from harness.polling import eventually
from harness.tools import load_script

RUN_AS_UID = 10001
SAMPLES_RATE = "sum(rate(torchjob_trainer_samples_total[1m])) > 0"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def example_job(kubectl: Kubectl, module_namespace: str) -> Iterator[dict[str, Any]]:
    job = jobs.example(extra_args=jobs.LONGER)
    jobs.apply(kubectl, job, module_namespace)
    yield job


def torchjob(cluster: Cluster, *args: str) -> list[str]:
    """The CLI from this environment against the suite's cluster."""
    return [str(Path(sys.executable).with_name("torchjob")), *args, "--kubeconfig", str(cluster.kubeconfig)]


@pytest.fixture(scope="module")
def follow_logs(
    cluster: Cluster, module_namespace: str, example_job: dict[str, Any]
) -> Iterator[subprocess.Popen[str]]:
    """`torchjob logs -f` started while the job trains; it ends by itself when the job does."""
    argv = torchjob(cluster, "logs", "-f", example_job["metadata"]["name"], "-n", module_namespace)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def exec_python(kubectl: Kubectl, namespace: str, pod: str, code: str) -> str:
    proc = kubectl("exec", "-n", namespace, pod, "-c", "trainer", "--", "python", "-c", code, timeout=60)
    return proc.stdout


def test_operator_is_available_under_restricted_pod_security(cluster: Cluster, kubectl: Kubectl) -> None:
    ns = cluster.operator_namespace
    crd = kubectl.json("get", "crd", "trainingjobs.torchjob.dev")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    deployments = kubectl.json("get", "deployment", "-n", ns, "-l", "app.kubernetes.io/component=operator")
    assert deployments["items"], f"no operator Deployment in {ns}"
    for deployment in deployments["items"]:
        assert deployment["status"].get("availableReplicas", 0) >= 1, deployment["metadata"]["name"]
    if cluster.real_node:
        labels = kubectl.json("get", "namespace", ns)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        (deployment,) = deployments["items"]
        # Both replicas run (the standby peers with the active one): admitted by Pod Security.
        assert deployment["status"].get("readyReplicas") == 2, deployment["status"]
        # The chart's operator watches every namespace: its peering object is cluster-scoped.
        (peering,) = kubectl.json("get", "clusterkopfpeerings")["items"]
        peers = [v for v in (peering.get("status") or {}).values() if isinstance(v, dict)]
        assert len(peers) == 2, f"peers in {peering['metadata']['name']}: {peering.get('status')}"


def test_example_pods_train_on_the_node(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    name, nodes = example_job["metadata"]["name"], example_job["spec"]["nodes"]
    jobs.wait_for_phase(kubectl, name, module_namespace, "Running")
    running = jobs.running_pods(kubectl, name, module_namespace, nodes)
    for pod in running:
        progress(f"{pod['metadata']['name']} on {pod['spec']['nodeName']} at {pod['status'].get('podIP')}")
        assert pod["status"].get("podIP"), pod["metadata"]["name"]


def test_pod_runtime_contract(kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]) -> None:
    """/dev/shm is the sized Memory emptyDir, the process runs as uid 10001, no token is mounted."""
    name = example_job["metadata"]["name"]
    pod = jobs.running_pods(kubectl, name, module_namespace, example_job["spec"]["nodes"])[0]
    (volume,) = [v for v in pod["spec"]["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    size_limit = volume["emptyDir"]["sizeLimit"]
    code = (
        "import json, os\n"
        "mounts = {l.split()[1]: l.split() for l in open('/proc/mounts')}\n"
        "s = os.statvfs('/dev/shm')\n"
        f"print(json.dumps({{'uid': os.getuid(), 'gid': os.getgid(), 'shm': mounts.get('/dev/shm'),"
        f" 'shm_bytes': s.f_blocks * s.f_frsize, 'token': os.path.exists({TOKEN_DIR!r})}}))\n"
    )
    seen = json.loads(exec_python(kubectl, module_namespace, pod["metadata"]["name"], code))
    progress(f"inside {pod['metadata']['name']}: {seen}")
    assert seen["uid"] == RUN_AS_UID and seen["gid"] == RUN_AS_UID
    assert seen["shm"] and seen["shm"][2] == "tmpfs", seen["shm"]
    assert seen["shm_bytes"] == _bytes(size_limit), (seen["shm_bytes"], size_limit)
    assert seen["token"] is False
    assert pod["spec"].get("automountServiceAccountToken") is False


def test_rendezvous_goes_through_the_headless_service_name(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    name = example_job["metadata"]["name"]
    running = jobs.running_pods(kubectl, name, module_namespace, example_job["spec"]["nodes"])
    (trainer,) = [c for c in running[-1]["spec"]["containers"] if c["name"] == "trainer"]
    env = {e["name"]: e.get("value") for e in trainer.get("env", [])}
    endpoint = env.get("PET_MASTER_ADDR") or env["PET_RDZV_ENDPOINT"].rsplit(":", 1)[0]
    assert endpoint.endswith(f".{module_namespace}.svc"), endpoint
    # The last pod resolves node 0's name through CoreDNS to node 0's pod IP: that is where it connected.
    resolved = exec_python(
        kubectl, module_namespace, running[-1]["metadata"]["name"],
        f"import socket; print(socket.gethostbyname({endpoint!r}))",
    ).strip()  # fmt: skip
    node0 = next(p for p in running if p["metadata"]["labels"]["torchjob.dev/node-index"] == "0")
    assert resolved == node0["status"]["podIP"], (endpoint, resolved)


def test_every_rank_serves_metrics_while_training(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    name = example_job["metadata"]["name"]
    for pod in jobs.running_pods(kubectl, name, module_namespace, example_job["spec"]["nodes"]):
        (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == "trainer"]
        ports = {
            p["name"]: p["containerPort"]
            for p in trainer.get("ports", [])
            if p["name"].startswith("metrics-")
        }
        assert len(ports) == example_job["spec"]["procsPerNode"], ports
        for port_name, port in sorted(ports.items()):
            path = (
                f"/api/v1/namespaces/{module_namespace}/pods/{pod['metadata']['name']}:{port}/proxy/metrics"
            )

            def scraped(path: str = path) -> str | None:
                proc = kubectl("get", "--raw", path, check=False)
                text = proc.stdout
                return text if proc.returncode == 0 and "torchjob_trainer_samples_total{" in text else None

            text = eventually(scraped, TIMEOUT, f"metrics of {pod['metadata']['name']} {port_name}", 2)
            line = next(x for x in text.splitlines() if x.startswith("torchjob_trainer_samples_total{"))
            progress(f"{pod['metadata']['name']} {port_name}: {line}")
            assert f'job="{name}"' in line


def test_live_progress_reaches_status_and_kubectl_get(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    # The in-cluster operator reads rank 0's /metrics over the pod IP (its default: every 30 s per job).
    name = example_job["metadata"]["name"]
    jobs.running_pods(kubectl, name, module_namespace, example_job["spec"]["nodes"])

    def first_read() -> dict[str, Any] | None:
        job = kubectl.json("get", "trainingjob", name, "-n", module_namespace)
        live = (job.get("status") or {}).get("progress") or {}
        return live if live.get("step", 0) > 0 else None

    live = eventually(first_read, 120, f"status.progress of {name}", 3)
    progress(f"status.progress: {live}")
    assert live["pod"] == f"{name}-node-0-r0" and live["steps"] == f"{live['step']}/{live['totalSteps']}"
    header, row = kubectl("get", "tj", name, "-n", module_namespace).stdout.splitlines()[:2]
    shown = row[header.index("PROGRESS") : header.index("ETA")].strip()
    step, total = shown.split("/")
    assert int(total) == live["totalSteps"] and int(step) >= live["step"], (header, row)


def test_prometheus_finds_the_pods_through_the_chart_monitors(
    cluster: Cluster, kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    if not cluster.prometheus:
        pytest.skip("no Prometheus Operator here (the real node tier runs one)")
    jobs.running_pods(
        kubectl, example_job["metadata"]["name"], module_namespace, example_job["spec"]["nodes"]
    )

    def answered() -> list[Any] | None:
        proc = kubectl("get", "--raw", monitoring.query_path(SAMPLES_RATE), check=False)
        return json.loads(proc.stdout)["data"]["result"] or None if proc.returncode == 0 else None

    try:
        (sample,) = eventually(answered, 150, f"Prometheus to answer {SAMPLES_RATE}", 3)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; targets: {_targets_seen(kubectl)}") from None
    progress(f"{SAMPLES_RATE} = {sample['value'][1]}")
    assert float(sample["value"][1]) > 0
    targets = json.loads(kubectl("get", "--raw", monitoring.api_path("targets")).stdout)["data"][
        "activeTargets"
    ]
    pools = {t["scrapePool"] for t in targets if t["health"] == "up"}
    ns = cluster.operator_namespace
    assert any(p.startswith(f"podMonitor/{ns}/") for p in pools), pools
    assert any(p.startswith(f"serviceMonitor/{ns}/") for p in pools), pools
    trainers = [
        t for t in targets if t["labels"].get("namespace") == module_namespace and t["health"] == "up"
    ]
    world = example_job["spec"]["nodes"] * example_job["spec"]["procsPerNode"]
    assert len(trainers) >= world, [t["labels"] for t in trainers]


def test_cli_top_reads_every_rank(
    cluster: Cluster,
    kubectl: Kubectl,
    module_namespace: str,
    example_job: dict[str, Any],
    follow_logs: subprocess.Popen[str],
) -> None:
    name, spec = example_job["metadata"]["name"], example_job["spec"]
    jobs.running_pods(kubectl, name, module_namespace, spec["nodes"])
    world = spec["nodes"] * spec["procsPerNode"]

    last: list[str] = []

    def table() -> str | None:
        argv = torchjob(cluster, "top", name, "-n", module_namespace, "--once")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        last[:] = [f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}"]
        rows = [[t for t in re.split(r"[\s│┃|]+", line) if t] for line in proc.stdout.splitlines()]
        ranks = {int(r[0]) for r in rows if len(r) > 3 and r[0].isdigit()}
        return proc.stdout if proc.returncode == 0 and ranks == set(range(world)) else None

    try:
        out = eventually(table, 120, f"`torchjob top {name}` to list {world} ranks", 3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last output:\n{last[0] if last else '-'}") from None
    progress(f"torchjob top:\n{out}")
    assert follow_logs.poll() is None, "torchjob logs -f ended while the job still runs"


def test_example_succeeds_and_logs_show_every_rank(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any], follow_logs: subprocess.Popen[str]
) -> None:
    name, spec = example_job["metadata"]["name"], example_job["spec"]
    status = jobs.wait_for_phase(kubectl, name, module_namespace, "Succeeded")
    assert status["nodes"]["succeeded"] == spec["nodes"]
    pods = jobs.pods(kubectl, name, module_namespace)
    assert len([p for p in pods if p["status"]["phase"] == "Succeeded"]) == spec["nodes"]
    world = spec["nodes"] * spec["procsPerNode"]
    ranks: set[int] = set()
    for pod in pods:
        logs = kubectl("logs", "-n", module_namespace, pod["metadata"]["name"], "-c", "trainer").stdout
        ranks |= {int(r) for r in re.findall(rf"\brank (\d+)/{world}\b", logs)}
        # Loader workers in a restricted, non-root pod start their torch_shm_manager (they fall back to
        # descriptors, with this warning, where it cannot).
        assert "loader sharing file_system unusable" not in logs, logs[-3000:]
    assert ranks == set(range(world)), f"ranks in kubectl logs: {sorted(ranks)}"
    # `torchjob logs -f`, started while the job ran, ends once it is done and carries every rank too.
    followed, _ = follow_logs.communicate(timeout=120)
    assert follow_logs.returncode == 0, followed[-3000:]
    followed_ranks = {int(r) for r in re.findall(rf"\brank (\d+)/{world}\b", followed)}
    assert followed_ranks == set(range(world)), followed[-3000:]


def _targets_seen(kubectl: Kubectl) -> list[tuple[str, str, str, str]]:
    """What Prometheus discovered (pool, instance, health, last error): why a query has no answer yet."""
    proc = kubectl("get", "--raw", monitoring.api_path("targets"), check=False)
    if proc.returncode != 0:
        return [("-", "-", "unreachable", proc.stderr[-300:])]
    data = json.loads(proc.stdout)["data"]
    return [
        (t["scrapePool"], t["labels"].get("instance", "-"), t["health"], t.get("lastError", ""))
        for t in data["activeTargets"]
    ] + [("dropped", str(len(data.get("droppedTargets", []))), "-", "-")]


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def test_start_up_on_real_pods_is_reported_for_every_rank(
    kubectl: Kubectl, module_namespace: str, example_job: dict[str, Any]
) -> None:
    """benchmarks/startup_pods.py on the example job once it Succeeded: every rank logged its start-up
    phases, each pod's first step follows its container's start. The figures are printed and written to
    build/startup-pods.json (a record of each run; the suite does not time them)."""
    name, spec = example_job["metadata"]["name"], example_job["spec"]
    jobs.wait_for_phase(kubectl, name, module_namespace, "Succeeded")
    bench = load_script("benchmarks/startup_pods.py", "startup_pods")
    job = json.loads(kubectl("get", "trainingjob", name, "-n", module_namespace, "-o", "json").stdout)
    pods = [p for p in jobs.pods(kubectl, name, module_namespace) if p["metadata"]["name"].endswith("-r0")]

    def log_of(pod: str) -> str:
        return str(kubectl("logs", "-n", module_namespace, pod, "-c", "trainer").stdout)

    result = bench.report(job, pods, log_of)
    ranks = sorted(r for row in result["pods"] for r in row["ranks"])
    assert ranks == list(range(spec["nodes"] * spec["procsPerNode"])), result
    assert all(row["container_to_first_step_seconds"] >= 0 for row in result["pods"]), result
    out = Path(__file__).resolve().parents[2] / "build" / "startup-pods.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    progress(f"start-up on real pods ({out}):\n{bench.table(result)}")
