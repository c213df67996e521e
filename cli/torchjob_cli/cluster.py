"""Cluster commands: submit, get, describe, logs, top, delete (any kubeconfig; also `kubectl torchjob`).

Every API call is a method of `Cluster`, the one layer with side effects on the cluster; the command
functions only decide and print, and what they show is built by the pure helpers in `torchjob_cli.views`.
The unit tests drive the commands with a fake `Cluster`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as _config
from rich.console import Console
from rich.live import Live
from torchjob_core import constants, spec
from torchjob_core.render import storage

from torchjob_cli import manifests, metrics, views

Obj = dict[str, Any]
# The kubernetes client is untyped; its entry points are used through Any.
kconfig: Any = _config

# The manager `submit` applies as: managedFields show which fields the CLI set, and an apply conflict
# elsewhere names it.
FIELD_MANAGER = "torchjob-cli"


class Cluster:
    """The API clients of one kubeconfig context and the namespace commands default to."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api: Any = api
        self.namespace = namespace
        self.custom: Any = client.CustomObjectsApi(api)
        self.core: Any = client.CoreV1Api(api)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        api = kconfig.new_client_from_config(config_file=kubeconfig, context=context)
        if namespace is None:
            try:
                contexts, active = kconfig.list_kube_config_contexts(config_file=kubeconfig)
                chosen = next((c for c in contexts if c["name"] == context), active) if context else active
                namespace = (chosen or {}).get("context", {}).get("namespace")
            except _config.ConfigException:
                namespace = None
        return cls(api, namespace or "default")

    def close(self) -> None:
        self.api.close()

    def get_job(self, name: str, namespace: str | None = None) -> Obj:
        obj: Obj = self.custom.get_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace or self.namespace, constants.PLURAL, name
        )
        return obj

    def find_job(self, name: str, namespace: str | None = None) -> Obj | None:
        """The job, or None where there is none."""
        try:
            return self.get_job(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply_job(self, doc: Obj) -> Obj:
        """Server-side apply of `doc` (its metadata names the namespace) as FIELD_MANAGER: the server
        sets the fields the manifest names and leaves every field another manager owns, such as the
        operator's finalizer and annotations or labels Kueue and admins add, where it is. Creates the
        job if there is none."""
        meta = doc["metadata"]
        obj: Obj = self.custom.patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            meta["namespace"],
            constants.PLURAL,
            meta["name"],
            doc,
            field_manager=FIELD_MANAGER,
            # Forced: the manifest is the user's statement of what the fields it names should be, as
            # the full replace before this was. Without it, every field last written by another
            # manager would fail the apply: a job created by `kubectl apply` (client-side, manager
            # kubectl-client-side-apply), changed by `kubectl edit`/`patch`, or created by an earlier
            # torchjob (plain create/replace). Force takes only fields the manifest names; what it leaves
            # out (finalizers, others' labels and annotations, status) keeps its owner. The cost, for
            # `kubectl apply --server-side` users sharing a job: their next apply of a differing value
            # reports a conflict with torchjob-cli, which is SSA telling them someone else set it.
            force=True,
            _content_type="application/apply-patch+yaml",  # a JSON body is valid YAML
        )
        return obj

    def list_jobs(self, all_namespaces: bool) -> list[Obj]:
        if all_namespaces:
            res = self.custom.list_cluster_custom_object(constants.GROUP, constants.VERSION, constants.PLURAL)
        else:
            res = self.custom.list_namespaced_custom_object(
                constants.GROUP, constants.VERSION, self.namespace, constants.PLURAL
            )
        items: list[Obj] = res.get("items", [])
        return items

    def pods(self, job: str) -> list[Obj]:
        res = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{constants.LABEL_JOB_NAME}={job}"
        )
        return [self.api.sanitize_for_serialization(p) for p in res.items]

    def events(self, name: str) -> list[Obj]:
        res = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind={constants.KIND}",
        )
        return [self.api.sanitize_for_serialization(e) for e in res.items]

    def pod_log(self, pod: str, *, follow: bool, tail: int | None) -> Any:
        """The trainer container's log as an unread urllib3 response: `.stream()` reads it,
        `.shutdown()` (urllib3 >= 2.3) ends a follow from another thread, `.close()` releases it."""
        kwargs: dict[str, Any] = {"container": constants.CONTAINER_NAME, "follow": follow}
        if tail is not None:
            kwargs["tail_lines"] = tail
        return self.core.read_namespaced_pod_log(pod, self.namespace, _preload_content=False, **kwargs)

    def pod_metrics(self, pod: str, port: int) -> str | None:
        """The pod's `/metrics` on `port` through the API server's pod proxy; None when it does not
        answer (not listening yet, or no `pods/proxy` permission)."""
        try:
            text = self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}", self.namespace, "metrics"
            )
        except client.ApiException:
            return None
        return str(text)

    def delete_job(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            constants.GROUP, constants.VERSION, self.namespace, constants.PLURAL, name
        )


def dispatch(args: argparse.Namespace, console: Console) -> int:
    cl = Cluster.connect(args.kubeconfig, args.context, args.namespace)
    try:
        handler = {
            "submit": submit,
            "get": get,
            "describe": describe,
            "logs": logs,
            "top": top,
            "delete": delete,
        }[args.command]
        return handler(cl, args, console)
    except client.ApiException as exc:
        reason = views.api_error_message(exc.status, exc.body, exc.reason)
        console.print(f"error: {reason}", style="red", markup=False, highlight=False)
        return 1
    finally:
        cl.close()


def submit(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    docs = manifests.training_jobs(Path(args.file))
    # Same field errors as admission, before anything is sent.
    warnings = [storage.ephemeral_warning(spec.load(doc)) for doc in docs]
    for doc, warning in zip(docs, warnings, strict=True):
        ns = doc.get("metadata", {}).get("namespace") or cl.namespace
        doc.setdefault("metadata", {})["namespace"] = ns
        name = doc["metadata"]["name"]
        if args.dry_run:
            console.print(yaml.safe_dump(doc, sort_keys=False), markup=False, highlight=False)
            console.print(f"trainingjob.{constants.GROUP}/{name} valid (dry run)", markup=False)
            _warn(console, name, warning)
            continue
        before = cl.find_job(name, ns)
        after = cl.apply_job(doc)
        verb = _applied(before, after)
        console.print(f"trainingjob.{constants.GROUP}/{name} {verb}", markup=False, highlight=False)
        _warn(console, name, warning)
    return 0


def _applied(before: Obj | None, after: Obj) -> str:
    """kubectl's verb: an apply that changes nothing writes nothing, so the resourceVersion stays."""
    if before is None:
        return "created"
    version = before.get("metadata", {}).get("resourceVersion")
    return "unchanged" if after.get("metadata", {}).get("resourceVersion") == version else "configured"


def _warn(console: Console, name: str, warning: str | None) -> None:
    """On stderr, as kubectl's warnings: stdout stays the list of what was applied."""
    if warning is not None:
        err = Console(stderr=True, highlight=False, emoji=False, no_color=console.no_color)
        err.print(f"warning: {name}: {warning}", markup=False, highlight=False, soft_wrap=True)


def get(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    jobs = [cl.get_job(args.name)] if args.name else cl.list_jobs(args.all_namespaces)
    for job in jobs:
        job.get("metadata", {}).pop("managedFields", None)  # as kubectl: noise unless asked for
    if args.output == "json":
        console.print_json(json.dumps(jobs[0] if args.name else {"items": jobs}))
    elif args.output == "yaml":
        console.print(
            yaml.safe_dump(jobs[0] if args.name else {"items": jobs}, sort_keys=False), markup=False
        )
    elif not jobs:
        console.print(f"No TrainingJobs found in namespace {cl.namespace}.", markup=False)
    else:
        table = views.jobs_table(
            jobs, now=time.time(), with_namespace=args.all_namespaces, wide=args.output == "wide"
        )
        console.print(table)
    return 0


def describe(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    job = cl.get_job(args.name)
    for renderable in views.describe(job, cl.pods(args.name), cl.events(args.name), now=time.time()):
        console.print(renderable)
    return 0


# How often `logs -f` looks for the pods of a new gang attempt, and how long it keeps reading after the
# job has finished: a kubelet ends each stream when its container exits, but not every node agent does.
FOLLOW_POLL_S = 1.0
FOLLOW_DRAIN_S = 3.0

LogItem = tuple[int, str] | str  # (node index, line), or the pod name when its stream has ended


class _LogStream:
    """One pod's trainer log on a thread; `close()` ends a follow the server would keep open."""

    def __init__(
        self,
        cl: Cluster,
        pod: Mapping[str, Any],
        *,
        follow: bool,
        tail: int | None,
        out: queue.Queue[LogItem],
    ) -> None:
        self.cl, self.follow, self.tail, self.out = cl, follow, tail, out
        self.name = str(pod["metadata"]["name"])
        self.node = views.node_index(pod)
        self.attempt = views.pod_attempt(pod)
        self.ended = False
        self._resp: Any = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"logs-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._resp = self.cl.pod_log(self.name, follow=self.follow, tail=self.tail)
            if self._closing:  # closed while connecting
                return
            for line in _lines(self._resp):
                self.out.put((self.node, line))
        except client.ApiException as exc:
            reason = views.api_error_message(exc.status, exc.body, exc.reason)
            self.out.put((self.node, f"(no logs: {reason})"))
        except Exception:  # a connection cut mid-read: expected after close(), else worth saying
            if not self._closing:
                self.out.put((self.node, "(log stream broke off)"))
        finally:
            if self._resp is not None:
                with contextlib.suppress(Exception):  # only this thread reads it, so only it closes it
                    self._resp.close()
            self.out.put(self.name)

    def close(self) -> None:
        """Ends the read from outside: shutting the socket down wakes the reading thread, whereas
        closing the response under it would block on the reader's lock."""
        self._closing = True
        shutdown = getattr(self._resp, "shutdown", None)  # urllib3 >= 2.3
        if shutdown is not None:
            with contextlib.suppress(Exception):  # already finished
                shutdown()


def _lines(resp: Any) -> Iterator[str]:
    buf = b""
    for chunk in resp.stream(4096):
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")


def _print_log(console: Console, node: int, line: str) -> None:
    console.print(views.prefixed_log_line(node, line), markup=False, highlight=False, soft_wrap=True)


def _drain(console: Console, out: queue.Queue[LogItem], streams: dict[str, _LogStream], until: float) -> bool:
    """Prints what arrives until `until` (monotonic) or every stream has ended; True if a line came."""
    printed = False
    while (left := until - time.monotonic()) > 0:
        try:
            item = out.get(timeout=left)
        except queue.Empty:
            break
        if isinstance(item, str):
            streams[item].ended = True
            if all(s.ended for s in streams.values()):
                break
        else:
            _print_log(console, *item)
            printed = True
    return printed


def logs(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    job = cl.get_job(args.name)
    if args.follow and args.attempt is None:
        return _follow_job(cl, args, console)
    attempt = views.attempt_of(job, args.attempt)
    pods = views.pods_of_attempt(cl.pods(args.name), attempt)
    if not pods:
        console.print(f"no pods for TrainingJob {args.name} (attempt {attempt})")
        return 1
    out: queue.Queue[LogItem] = queue.Queue()
    streams = {
        s.name: s for s in (_LogStream(cl, p, follow=args.follow, tail=args.tail, out=out) for p in pods)
    }
    try:
        while not all(s.ended for s in streams.values()):
            _drain(console, out, streams, time.monotonic() + 3600)
    except KeyboardInterrupt:
        return 130
    finally:
        for s in streams.values():
            s.close()
    return 0


def _follow_job(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    """Follows the job rather than a set of pods: each gang attempt's pods are picked up as their
    containers start, and the command ends once the job has finished and its streams are drained."""
    out: queue.Queue[LogItem] = queue.Queue()
    streams: dict[str, _LogStream] = {}
    shown_attempt: int | None = None
    finished_at: float | None = None
    try:
        while True:
            job = cl.get_job(args.name)
            attempt = views.attempt_of(job, None)
            for pod in views.pods_of_attempt(cl.pods(args.name), attempt):
                if pod["metadata"]["name"] in streams or not views.container_started(pod):
                    continue
                if shown_attempt is not None and attempt != shown_attempt:
                    console.print(f"--- gang attempt {attempt} ---", markup=False, highlight=False)
                elif any((s.attempt, s.node) == (attempt, views.node_index(pod)) for s in streams.values()):
                    node, name = views.node_index(pod), pod["metadata"]["name"]
                    console.print(f"--- node {node} replaced: {name} ---", markup=False, highlight=False)
                shown_attempt = attempt
                # --tail trims what is already there when following starts, not a later attempt.
                tail = None if streams else args.tail
                stream = _LogStream(cl, pod, follow=True, tail=tail, out=out)
                streams[stream.name] = stream
            printed = _drain(console, out, streams, time.monotonic() + FOLLOW_POLL_S)
            if not views.job_finished(job):
                continue
            now = time.monotonic()
            finished_at = finished_at or now
            if all(s.ended for s in streams.values()) or (not printed and now - finished_at > FOLLOW_DRAIN_S):
                phase = job.get("status", {}).get("phase")
                console.print(f"TrainingJob {args.name} {phase}", markup=False, highlight=False)
                return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for s in streams.values():
            s.close()


def _scrape_pods(cl: Cluster, job: Obj) -> list[views.TopRow]:
    rows = []
    procs, base = views.metrics_layout(job)
    pods = views.pods_of_attempt(cl.pods(job["metadata"]["name"]), views.attempt_of(job, None))
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Running" or not base:
            continue
        node = views.node_index(pod)
        for local in range(procs):
            text = cl.pod_metrics(pod["metadata"]["name"], base + local)
            if text is None:
                continue
            point = metrics.rank_snapshot(metrics.parse_text(text), rank=node * procs + local, now=0.0)
            if point is not None:
                rows.append(views.TopRow.from_progress(node, point))
    return rows


def query_prometheus(url: str, job: str, namespace: str) -> list[views.TopRow]:
    results: dict[str, list[dict[str, Any]]] = {}
    for field, query in views.prometheus_queries(job, namespace).items():
        full = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        doc = json.loads(metrics.fetch(full))
        results[field] = doc.get("data", {}).get("result", [])
    return views.rows_from_prometheus(results)


def top(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    job = cl.get_job(args.name)

    def rows() -> list[views.TopRow]:
        if args.prometheus:
            return query_prometheus(args.prometheus, args.name, cl.namespace)
        return _scrape_pods(cl, job)

    if args.once:
        console.print(views.top_table(args.name, rows()))
        return 0
    with Live(views.top_table(args.name, rows()), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                live.update(views.top_table(args.name, rows()), refresh=True)
        except KeyboardInterrupt:
            pass
    return 0


def delete(cl: Cluster, args: argparse.Namespace, console: Console) -> int:
    cl.delete_job(args.name)
    console.print(f"trainingjob.{constants.GROUP}/{args.name} deleted", markup=False, highlight=False)
    if args.wait:
        while cl.find_job(args.name) is not None:
            time.sleep(0.5)
    return 0
