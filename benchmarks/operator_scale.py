"""Operator scale benchmark: N TrainingJobs x M nodes vs the same N*M bare pods created directly.

Starts the test control plane (tests/harness; etcd, kube-apiserver, scheduler, controller-manager, KWOK)
unless `--kubeconfig` points at one, applies the CRD, and then:

1. baseline: creates N*M bare pods straight through the API from a thread pool as wide as the
   operator's (the physical bound on this machine: the same API server, the same CPU);
2. operator: starts `python -m torchjob_operator` on a fresh namespace and creates N TrainingJobs of M
   nodes each, from a pool as wide as the baseline's (`--profile` runs it under py-spy, `--memtrace`
   under tracemalloc).

A pod watch records when each pod appears, runs and goes. It prints the time from the first create to
the last pod created and to every pod Running (bare pods: the scheduler's and KWOK's bound), p50/p99 of
each job's create->last-pod time, API requests per job (from the operator's
`torchjob_operator_api_requests_total`, and per verb from the audit log), the operator's peak RSS, and
the ratios to the baseline. restart256 also times one lost pod -> the old attempt gone -> every pod of
the new attempt created.

    .venv/bin/python benchmarks/operator_scale.py --scenario 100x4 [--operator-args "--api-qps 0"]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import shlex
import signal
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
NODE_LABEL, ATTEMPT_LABEL = "torchjob.dev/node-index", "torchjob.dev/attempt"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class PodWatch:
    """Records the monotonic time each pod of a namespace is first seen, first seen Running, and gone.

    One LIST, then a watch from its resourceVersion, both read as raw JSON: the client's pod models cost
    milliseconds each, and a watch that re-listed 8,000 pods every few seconds took a CPU from the
    control plane it measures."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.seen: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._core: Any = client.CoreV1Api(api)
        self._ns = namespace
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _note(self, kind: str, pod: dict[str, Any]) -> None:
        now, name = time.monotonic(), pod["metadata"]["name"]
        self.seen.setdefault(name, now)
        self.labels[name] = pod["metadata"].get("labels") or {}
        if kind == "DELETED":
            self.gone.setdefault(name, now)
        if (pod.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(name, now)

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = json.loads(self._core.list_namespaced_pod(self._ns, _preload_content=False).data)
                    for pod in listed["items"]:
                        self._note("ADDED", pod)
                    version = listed["metadata"]["resourceVersion"]
                version = self._follow(version)
            except Exception:
                if self._stop.is_set():
                    return  # the stream was cut because we are done
                version = None  # expired (410) or dropped: list again
                time.sleep(0.1)

    def _follow(self, version: str) -> str | None:
        """Watches from `version` until the server ends the stream; the version to resume from."""
        self._response = self._core.list_namespaced_pod(
            self._ns, watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=60, _preload_content=False,
        )  # fmt: skip
        for line in self._response:
            event = json.loads(line)
            if event["type"] == "ERROR":
                return None
            obj = event["object"]
            version = obj["metadata"].get("resourceVersion", version)
            if event["type"] != "BOOKMARK":
                self._note(event["type"], obj)
            if self._stop.is_set():
                break
        return version

    def eventually(self, count: int, timeout: float, *, running: bool = False) -> None:
        pods = self.running if running else self.seen
        deadline = time.monotonic() + timeout
        while len(pods) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(pods)}/{count} pods{' Running' if running else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._response is not None:
            self._response.close()


def make_namespace(api: Any, name: str) -> None:
    from harness.controlplane import default_service_account_exists
    from harness.polling import eventually
    from kubernetes import client

    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    eventually(lambda: default_service_account_exists(api, name), 60, f"ServiceAccount {name}/default")


def bare_pods(api: Any, jobs: int, nodes: int, workers: int) -> dict[str, float]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    ns = f"bench-bare-{os.getpid()}"
    make_namespace(api, ns)
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
    # The scheduler binds them and KWOK runs them: the bound for "every pod Running".
    watcher.eventually(jobs * nodes, 600, running=True)
    running = max(watcher.running.values()) - start
    watcher.stop()
    core.delete_namespace(ns)
    return {"total_seconds": total, "pods_per_second": jobs * nodes / total, "running_seconds": running}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def start_operator(
    kubeconfig: Path,
    ns: str,
    profile: Path | None = None,
    extra: tuple[str, ...] = (),
    memtrace: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """The operator as a process serving `ns`, once its /metrics answers; returns it and that port.

    With `profile`, py-spy samples it (all threads, idle included) into that file as collapsed stacks.
    With `memtrace`, it runs under tracemalloc (`operator_memtrace.py`), keeping its peak heap there.
    """
    from harness.ports import free_ports

    metrics_port, health_port = free_ports(2)
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    cmd = [sys.executable, "-m", "torchjob_operator", "--namespace", ns, "--standalone"]
    cmd += ["--metrics-port", str(metrics_port), "--health-port", str(health_port), *extra]
    if memtrace is not None:
        cmd[1:3] = [str(REPO_ROOT / "benchmarks" / "operator_memtrace.py"), str(memtrace)]
    if profile is not None:
        spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw", "--threads"]
        cmd = [*spy, "--rate", "50", "-o", str(profile), "--", *cmd]
    # Its own process group: a stop reaches py-spy and the operator alike.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
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
    # SIGINT to the group: Kopf stops gracefully, and py-spy (if any) writes its profile once it exits.
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def create_jobs(custom: Any, ns: str, jobs: int, nodes: int, workers: int) -> dict[str, float]:
    """Creates the TrainingJobs from a pool as wide as the bare run's; returns when each create was sent,
    by job name. (One thread took 2.6 s for 100 jobs, longer than the bare run's 400 pods.)"""
    created_at: dict[str, float] = {}

    def create(i: int) -> None:
        name = f"job-{i}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "image": "x",
                "nodes": nodes,
                "resources": {"requests": SMALL},
                # The restart scenario measures the operator, not the backoff it would wait out.
                "runPolicy": {"backoffSeconds": 0},
            },
        }
        created_at[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(jobs)))
    return created_at


def wait_for_phase(custom: Any, ns: str, phases: tuple[str, ...], timeout: float) -> float:
    """Waits until every job reports one of `phases`; returns when that was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        if items and all((i.get("status") or {}).get("phase") in phases for i in items):
            return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"jobs did not all reach {phases}")


def operator_requests(log: Path, ns: str) -> collections.Counter[str]:
    """verb -> requests the operator (its client, and Kopf's) made in `ns`, from the audit log."""
    from harness import audit

    return audit.operator_requests(audit.events(log), ns)


def api_requests(metrics_text: str) -> float:
    pattern = r'torchjob_operator_api_requests_total\{verb="\w+"\} (\S+)'
    return sum(float(v) for v in re.findall(pattern, metrics_text))


def status_429s(log: Path) -> int:
    from harness import audit

    return sum(1 for e in audit.events(log) if (e.get("responseStatus") or {}).get("code") == 429)


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def operator_pid(proc: subprocess.Popen[bytes], profiled: bool) -> int:
    """The operator's own pid (under py-spy, its child)."""
    if not profiled:
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(children[0])


def remove_jobs(custom: Any, core: Any, ns: str) -> None:
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": None}}
        )
    core.delete_namespace(ns)


def lose_one_pod(core: Any, ns: str, watcher: PodWatch, nodes: int, timeout: float) -> dict[str, float]:
    """Deletes node 0's pod of attempt 0; seconds until every pod of attempt 0 was gone, and until every
    pod of attempt 1 was created."""
    victim = next(p for p, lb in watcher.labels.items() if lb.get(NODE_LABEL) == "0")
    t0 = time.monotonic()
    core.delete_namespaced_pod(victim, ns)
    deadline = t0 + timeout
    while True:
        new = [watcher.seen[p] for p, lb in list(watcher.labels.items()) if lb.get(ATTEMPT_LABEL) == "1"]
        if len(new) >= nodes:
            labels = list(watcher.labels.items())
            old = [watcher.gone.get(p, 0.0) for p, lb in labels if lb.get(ATTEMPT_LABEL) == "0"]
            return {"restart_seconds": max(new) - t0, "restart_old_gone_seconds": max(old) - t0}
        if time.monotonic() > deadline:
            raise TimeoutError(f"saw {len(new)}/{nodes} pods of attempt 1")
        time.sleep(0.05)


def operator_run(
    api: Any,
    kubeconfig: Path,
    jobs: int,
    nodes: int,
    *,
    restart: bool,
    log: Path | None,
    profile: Path | None,
    workers: int,
    extra: tuple[str, ...] = (),
    memtrace: Path | None = None,
) -> dict[str, Any]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    ns = f"bench-op-{os.getpid()}"
    make_namespace(api, ns)
    proc, metrics_port = start_operator(kubeconfig, ns, profile, extra, memtrace)
    pid = operator_pid(proc, profile is not None)
    rss_idle = peak_rss_mib(pid)
    try:
        watcher = PodWatch(api, ns)
        start = time.monotonic()
        created_at = create_jobs(custom, ns, jobs, nodes, workers)
        jobs_created = time.monotonic() - start
        watcher.eventually(jobs * nodes, 1800)
        total = max(watcher.seen.values()) - start
        per_job: dict[str, float] = {}
        for pod, seen in list(watcher.seen.items()):
            job = watcher.labels[pod].get("torchjob.dev/job-name", "")
            per_job[job] = max(per_job.get(job, 0.0), seen - created_at[job])
        running = wait_for_phase(custom, ns, ("Running",), 1800) - start
        watcher.eventually(jobs * nodes, 60, running=True)
        pods_running = max(watcher.running.values()) - start
        result: dict[str, Any] = {
            "jobs_created_seconds": jobs_created,
            "total_seconds": total,
            "running_seconds": running,
            "pods_running_seconds": pods_running,
            "pods_per_second": jobs * nodes / total,
            "job_p50_seconds": statistics.median(per_job.values()),
            "job_p99_seconds": percentile(list(per_job.values()), 0.99),
            "api_requests_per_job": api_requests(scrape(metrics_port)) / jobs,
        }
        if restart:
            result |= lose_one_pod(core, ns, watcher, nodes, 600)
            wait_for_phase(custom, ns, ("Running",), 600)
        time.sleep(2)  # the last status writes and Events land before they are counted
        watcher.stop()
        if log is not None:
            verbs = operator_requests(log, ns)
            result["audit_requests_per_job"] = sum(verbs.values()) / jobs
            from harness import audit

            result["audit_writes_per_job"] = sum(audit.writes(verbs).values()) / jobs
            result["audit_by_verb_per_job"] = {k: n / jobs for k, n in sorted(verbs.items())}
            result["http_429"] = status_429s(log)
        result["operator_idle_rss_mib"] = rss_idle
        result["operator_peak_rss_mib"] = peak_rss_mib(pid)
        return result
    finally:
        stop_process(proc)
        remove_jobs(custom, core, ns)


SCENARIOS = {
    # name: (jobs, nodes per job, KWOK nodes at least, restart one pod)
    "100x4": (100, 4, 4, False),
    "1000x8": (1000, 8, 80, False),
    "restart256": (1, 256, 8, True),
}


def wait_nodes_ready(api: Any, count: int, timeout: float) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [
            n
            for n in core.list_node().items
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        ]
        if len(ready) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} nodes Ready")


def kwok_nodes(pods: int, at_least: int) -> int:
    """Enough 110-pod KWOK nodes for the bare pods and the operator's at once (a namespace's pods can
    outlive its deletion for a while), and at least `at_least`."""
    return max(at_least, -(-2 * pods // 110))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="100x4")
    parser.add_argument("--jobs", type=int, help="override the scenario's job count")
    parser.add_argument("--nodes", type=int, help="override the scenario's nodes per job")
    parser.add_argument(
        "--kubeconfig", type=Path, help="use this control plane (CRD applied) instead of starting one"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the operator into this file (collapsed stacks)")
    parser.add_argument(
        "--memtrace", type=Path, help="run the operator under tracemalloc; its peak heap goes to this prefix"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--operator-args",
        default="",
        help="more operator flags, one string (e.g. '--api-qps 0' to measure without its client rate limit)",
    )
    args = parser.parse_args()
    jobs, nodes, min_kwok, restart = SCENARIOS[args.scenario]
    jobs, nodes = args.jobs or jobs, args.nodes or nodes
    pods = jobs * nodes

    from harness.controlplane import ControlPlane, client_from_kubeconfig
    from harness.kubectl import apply_crds, bind
    from harness.nodes import create_node
    from kubernetes import client

    cp: ControlPlane | None = None
    kubeconfig = args.kubeconfig
    log: Path | None = None
    if kubeconfig is None:
        cp = ControlPlane(audit=True).start()
        kubeconfig, log = cp.kubeconfig, cp.audit_log
        apply_crds(bind(kubeconfig), REPO_ROOT / "manifests" / "crd.yaml")
    try:
        with client_from_kubeconfig(kubeconfig) as api:
            wanted = kwok_nodes(pods, min_kwok)
            # A control plane given by --kubeconfig may hold them from an earlier run.
            existing = {node.metadata.name for node in client.CoreV1Api(api).list_node().items}
            for name in (f"bench-node-{i}" for i in range(wanted)):
                if name not in existing:
                    create_node(api, name, cpu="1000", memory="4Ti", wait_ready_s=None)
            wait_nodes_ready(api, wanted + 4, 120)  # and the control plane's 4 default nodes
            # The operator creates a job's pods concurrently on the default executor: min(32, cpus + 4).
            workers = min(32, (os.cpu_count() or 1) + 4)
            bare = bare_pods(api, jobs, nodes, workers)
            extra = tuple(shlex.split(args.operator_args))
            op = operator_run(
                api,
                kubeconfig,
                jobs,
                nodes,
                restart=restart,
                log=log,
                profile=args.profile,
                workers=workers,
                extra=extra,
                memtrace=args.memtrace,
            )
    finally:
        if cp is not None:
            cp.stop()
    report(args.scenario, (jobs, nodes, wanted), bare, op, args.operator_args)
    if args.json:
        args.json.write_text(json.dumps({"scenario": args.scenario, "bare": bare, "operator": op}, indent=2))
    return 0


def report(
    scenario: str, shape: tuple[int, int, int], bare: dict[str, float], op: dict[str, Any], flags: str
) -> None:
    jobs, nodes, kwok = shape
    bound = bare["total_seconds"]
    print(f"{scenario}: {jobs} jobs x {nodes} nodes = {jobs * nodes} pods on {kwok} KWOK nodes, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"operator flags: {flags or 'defaults'}")
    running_bound = bare["running_seconds"]
    print(f"bare pods:  {bound:.2f} s to the last pod ({bare['pods_per_second']:.0f} pods/s), "
          f"{running_bound:.2f} s to every pod Running")  # fmt: skip
    print(f"jobs:       {op['jobs_created_seconds']:.2f} s to create the TrainingJobs")
    print(
        f"operator:   {op['total_seconds']:.2f} s to the last pod ({op['total_seconds'] / bound:.2f}x bare)"
    )
    print(f"running:    {op['pods_running_seconds']:.2f} s to every pod Running "
          f"({op['pods_running_seconds'] / running_bound:.2f}x bare Running), "
          f"{op['running_seconds']:.2f} s to every job Running "
          f"({op['running_seconds'] / running_bound:.2f}x bare Running)")  # fmt: skip
    print(
        f"per job:    p50 {op['job_p50_seconds']:.2f} s, p99 {op['job_p99_seconds']:.2f} s (create->last pod)"
    )
    if "restart_seconds" in op:
        r = op["restart_seconds"]
        print(
            f"restart:    {r:.2f} s from the lost pod to the new attempt's last pod ({r / bound:.2f}x bare); "
            f"the old attempt's pods all gone at {op['restart_old_gone_seconds']:.2f} s"
        )
    print(f"requests:   {op['api_requests_per_job']:.1f} per job by the operator's client (its metric)")
    if "audit_requests_per_job" in op:
        print(f"audit:      {op['audit_requests_per_job']:.1f} requests, "
              f"{op['audit_writes_per_job']:.1f} writes per job (nodes + 3 = {nodes + 3}); "
              f"HTTP 429: {op['http_429']}")  # fmt: skip
        for verb, n in op["audit_by_verb_per_job"].items():
            print(f"            {n:7.2f}  {verb}")
    print(f"memory:     operator RSS idle {op['operator_idle_rss_mib']:.0f} MiB, "
          f"peak {op['operator_peak_rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
