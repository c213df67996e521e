"""Operator scale benchmark: N TrainingJobs x M nodes vs the same N*M bare pods created directly.

Starts the test control plane (tests/harness; etcd, kube-apiserver, scheduler, controller-manager, KWOK)
unless `--kubeconfig` points at one, applies the CRD, and then:

1. baseline: creates N*M bare pods straight through the API from a thread pool as wide as the
   operator's (the physical bound on this machine: the same API server, the same CPU);
2. operator: starts `python -m torchjob_operator` on a fresh namespace and creates N TrainingJobs of M
   nodes each as fast as it can.

A pod watch records when each pod appears. It prints the time from the first create to the last pod
created, p50/p99 of each job's create->last-pod time, API requests per job (from the operator's
`torchjob_operator_api_requests_total`), the operator's peak RSS, and the ratios to the baseline.

    .venv/bin/python benchmarks/operator_scale.py --jobs 100 --nodes 4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

GROUP, VERSION, PLURAL = "torchjob.dev", "v1alpha1", "trainingjobs"
SMALL = {"cpu": "1m", "memory": "1Mi"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class PodWatch:
    """Records the monotonic time each pod of a namespace is first seen."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client, watch

        self.seen: dict[str, float] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._core: Any = client.CoreV1Api(api)
        self._ns = namespace
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(self._core.list_namespaced_pod, self._ns, timeout_seconds=5):
                    pod = event["object"]
                    self.seen.setdefault(pod.metadata.name, time.monotonic())
                    self.labels[pod.metadata.name] = pod.metadata.labels or {}
                    if self._stop.is_set():
                        break
            except Exception:
                if self._stop.is_set():
                    return  # the stream was cut because we are done
                time.sleep(0.1)  # a dropped watch: start another one

    def eventually(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(self.seen)}/{count} pods")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()


def make_namespace(core: Any, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bare_pods(api: Any, jobs: int, nodes: int, workers: int) -> dict[str, float]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    ns = f"bench-bare-{os.getpid()}"
    make_namespace(core, ns)
    watcher = PodWatch(api, ns)

    def create(i: int) -> None:
        body = {
            "metadata": {"name": f"bare-{i}"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "trainer", "image": "x", "resources": {"requests": SMALL}}],
            },
        }
        core.create_namespaced_pod(ns, body)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(jobs * nodes)))
    watcher.eventually(jobs * nodes, 300)
    total = max(watcher.seen.values()) - start
    watcher.stop()
    core.delete_namespace(ns)
    return {"total_seconds": total, "pods_per_second": jobs * nodes / total}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def start_operator(kubeconfig: Path, ns: str) -> tuple[subprocess.Popen[bytes], int]:
    """The operator as a process serving `ns`, once its /metrics answers; returns it and that port."""
    from harness.ports import free_ports

    metrics_port, health_port = free_ports(2)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    cmd = [sys.executable, "-m", "torchjob_operator", "--namespace", ns, "--standalone"]
    cmd += ["--metrics-port", str(metrics_port), "--health-port", str(health_port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while True:
        try:
            scrape(metrics_port)
            return proc, metrics_port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_process(proc)
                raise RuntimeError("operator did not start") from None
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def create_jobs(custom: Any, ns: str, jobs: int, nodes: int) -> dict[str, float]:
    """Creates the TrainingJobs; returns when each create was sent, by job name."""
    created_at: dict[str, float] = {}
    for i in range(jobs):
        name = f"job-{i}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"image": "x", "nodes": nodes, "resources": {"requests": SMALL}},
        }
        created_at[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    return created_at


def wait_for_status(custom: Any, ns: str, timeout: float = 120) -> None:
    """Lets status writes settle (every job reports a phase) before requests are counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        if all((i.get("status") or {}).get("phase") in ("Pending", "Running") for i in items):
            return
        time.sleep(0.5)


def api_requests(metrics_text: str) -> float:
    pattern = r'torchjob_operator_api_requests_total\{verb="\w+"\} (\S+)'
    return sum(float(v) for v in re.findall(pattern, metrics_text))


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def remove_jobs(custom: Any, core: Any, ns: str) -> None:
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": None}}
        )
    core.delete_namespace(ns)


def operator_run(api: Any, kubeconfig: Path, jobs: int, nodes: int) -> dict[str, float]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"bench-op-{os.getpid()}"
    make_namespace(core, ns)
    proc, metrics_port = start_operator(kubeconfig, ns)
    try:
        watcher = PodWatch(api, ns)
        start = time.monotonic()
        created_at = create_jobs(custom, ns, jobs, nodes)
        watcher.eventually(jobs * nodes, 600)
        total = max(watcher.seen.values()) - start
        per_job: dict[str, float] = {}
        for pod, seen in watcher.seen.items():
            job = watcher.labels[pod].get("torchjob.dev/job-name", "")
            per_job[job] = max(per_job.get(job, 0.0), seen - created_at[job])
        wait_for_status(custom, ns)
        requests = api_requests(scrape(metrics_port))
        watcher.stop()
        return {
            "total_seconds": total,
            "pods_per_second": jobs * nodes / total,
            "job_p50_seconds": statistics.median(per_job.values()),
            "job_p99_seconds": percentile(list(per_job.values()), 0.99),
            "api_requests_per_job": requests / jobs,
            "operator_peak_rss_mib": peak_rss_mib(proc.pid),
        }
    finally:
        stop_process(proc)
        remove_jobs(custom, core, ns)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument(
        "--kubeconfig", type=Path, help="use this control plane (CRD applied) instead of starting one"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from harness.controlplane import ControlPlane, client_from_kubeconfig
    from harness.kubectl import apply_crds, bind

    cp: ControlPlane | None = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        cp = ControlPlane().start()
        kubeconfig = cp.kubeconfig
        apply_crds(bind(kubeconfig), REPO_ROOT / "manifests" / "crd.yaml")
    try:
        with client_from_kubeconfig(kubeconfig) as api:
            # The operator creates a job's pods concurrently on the default executor: min(32, cpus + 4).
            workers = min(32, (os.cpu_count() or 1) + 4)
            bare = bare_pods(api, args.jobs, args.nodes, workers)
            op = operator_run(api, kubeconfig, args.jobs, args.nodes)
    finally:
        if cp is not None:
            cp.stop()
    ratio = op["total_seconds"] / bare["total_seconds"]
    print(f"{args.jobs} jobs x {args.nodes} nodes = {args.jobs * args.nodes} pods, {os.cpu_count()} CPUs")
    print(f"bare pods:  {bare['total_seconds']:.2f} s to the last pod ({bare['pods_per_second']:.0f} pods/s)")
    print(f"operator:   {op['total_seconds']:.2f} s to the last pod ({op['pods_per_second']:.0f} pods/s)")
    print(
        f"per job:    p50 {op['job_p50_seconds']:.2f} s, p99 {op['job_p99_seconds']:.2f} s (create->last pod)"
    )
    print(f"requests:   {op['api_requests_per_job']:.1f} per job (pods, service, status, events)")
    print(f"memory:     operator peak RSS {op['operator_peak_rss_mib']:.0f} MiB")
    print(f"ratio:      operator / bare = {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"bare": bare, "operator": op, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
