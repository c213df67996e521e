"""The only module that talks to the Kubernetes API (besides Kopf's own watches).

Every request waits its turn in the operator's client rate limit (`RateLimiter`: `--api-qps`,
`--api-burst`) and is counted per TrainingJob (`RequestLedger`) and in
`torchjob_operator_api_requests_total{verb}`. Creates treat 409 as success and deletes treat 404 as
success, so every pass can be repeated safely. The client is synchronous; calls run in threads.

Answers that say "not now" are retried here, with one policy (`RETRY`) for our calls and for Kopf's
own (its watches and patches; `kopf_backoffs`): 429 (API Priority and Fairness rejected the request), 5xx
and a lost connection (an apiserver restarting) are tried again after 0.5, 1, 2, 4 ... s, never sooner
than the answer's Retry-After, and counted in `torchjob_operator_api_retries_total{reason}`. Retrying a
create whose first try did land gets 409, which is already success, so retries are safe for every verb.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from torchjob_core import constants

from torchjob_operator import metrics, rejections
from torchjob_operator.budget import TokenBucket
from torchjob_operator.errors import ClaimsUnavailableError, PodGroupUnavailableError, PodRejectedError
from torchjob_operator.settings import ClientRateLimit

JobKey = tuple[str, str]  # (namespace, name)
USER_AGENT = constants.MANAGED_BY
#: The pods a collection DELETE reaches: those that have not ended (Failed and Succeeded pods keep logs).
ACTIVE_POD_PHASES = "status.phase!=Failed,status.phase!=Succeeded"
JSON, MERGE_PATCH = "application/json", "application/merge-patch+json"
T = TypeVar("T")


def path(*segments: str) -> str:
    """An API path from its segments, each quoted (names are DNS labels; quoting costs nothing)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def namespaced(namespace: str, plural: str, *rest: str, group: str = "", version: str = "v1") -> str:
    prefix = ("apis", group, version) if group else ("api", version)
    return path(*prefix, "namespaces", namespace, plural, *rest)


@dataclasses.dataclass(frozen=True)
class Request:
    """One API request, as plain JSON."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None
    content_type: str = JSON


def send(api_client: client.ApiClient, request: Request) -> bytes:
    """`request` through the client's credentials, TLS and connection pool; the answer's bytes. Not the
    generated API classes: they validate every argument into pydantic models, which profiled as more CPU
    than the request, and loading them alone holds about 19 MiB. The answer is read to its end and its
    connection handed back to the pool (unread, each create had opened a TLS connection of its own). A
    non-2xx answer raises the `ApiException` the generated client would."""
    _, url, headers, _, _ = api_client.param_serialize(
        request.method,
        request.path,
        query_params=list(request.query) or None,
        header_params={"Accept": JSON, "Content-Type": request.content_type},
        auth_settings=["BearerToken"],
    )
    response: Any = api_client.call_api(request.method, url, header_params=headers, body=request.body)
    data = response.read()
    response.response.release_conn()
    if not 200 <= response.status <= 299:
        raise client.ApiException.from_response(
            http_resp=response, body=data.decode(errors="replace"), data=None
        )
    return bytes(data)


class RequestLedger:
    """API requests per job and verb."""

    def __init__(self) -> None:
        self.by_job: dict[JobKey, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def count(self, job: JobKey, verb: str) -> None:
        self.by_job[job][verb] += 1
        metrics.API_REQUESTS.labels(verb=verb).inc()

    def total(self, job: JobKey) -> int:
        return sum(self.by_job.get(job, collections.Counter()).values())

    def forget(self, job: JobKey) -> None:
        self.by_job.pop(job, None)


#: HTTP answers worth another try: throttled by API Priority and Fairness, or the server failing for now.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Backoff for answers that say "not now" (RETRY_STATUSES, or no answer at all)."""

    #: Waits before each retry; their sum (about 90 s) outlasts an apiserver restart.
    backoffs: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 30, 30)
    #: A Retry-After beyond this is cut to it, so a confused server cannot park a job loop for hours.
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        """The wait before retry number `retry` (0-based): the backoff, or Retry-After when longer."""
        backoff = self.backoffs[retry]
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_retry_after))


RETRY = RetryPolicy()


def kopf_backoffs() -> tuple[float, ...]:
    """Kopf's `settings.networking.error_backoffs`: Kopf retries 429, 5xx and lost connections itself and
    waits at least the Retry-After, so giving it our backoffs makes one policy for every request."""
    return RETRY.backoffs


def retry_reason(exc: BaseException) -> str | None:
    """Why `exc` is worth another try (the metric's `reason` label), or None when it is final."""
    if isinstance(exc, client.ApiException):
        if exc.status == 429:
            return "throttled"
        if exc.status in RETRY_STATUSES:
            return "server_error"
        return None
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError)):
        return "connection"  # refused, reset or timed out: no answer (an apiserver restarting)
    return None


def retry_after(exc: BaseException) -> float | None:
    """The server's Retry-After in seconds (header, else the Status's details.retryAfterSeconds)."""
    if not isinstance(exc, client.ApiException):
        return None
    header = (exc.headers or {}).get("Retry-After")
    if header is not None:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass  # an HTTP date: the apiserver never sends one; fall back to the body and the backoff
    try:
        details = json.loads(exc.body or "").get("details") or {}
        return max(float(details["retryAfterSeconds"]), 0.0)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


class RateLimiter:
    """`ClientRateLimit` over every request of this operator (each try of a retry too): a token bucket
    shared by the job loops, which wait their turn here."""

    def __init__(
        self,
        limit: ClientRateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.bucket = TokenBucket(capacity=limit.burst, rate=limit.qps) if limit.qps > 0 else None
        self._clock, self._sleep = clock, sleep

    async def acquire(self) -> None:
        if self.bucket is None:
            return
        # A reservation, as client-go's limiter makes: each request sleeps once until its own slot. Waiters
        # that polled the bucket would all wake on every refill (1,000 job loops: 50,000 wake-ups a second).
        wait = self.bucket.reserve(1, self._clock())
        if wait > 0:
            metrics.API_THROTTLE_WAIT.inc(wait)
            await self._sleep(wait)


UNLIMITED = RateLimiter(ClientRateLimit(qps=0))


def load_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    loader: Any = config
    try:
        loader.load_incluster_config()
    except loader.ConfigException:
        loader.load_kube_config()
    api_client = client.ApiClient()
    # Our own name in the API server's audit log and metrics, apart from other Python clients.
    api_client.user_agent = USER_AGENT
    return api_client


class KubeApi:
    """Counted wrappers over the few calls the operator makes, as plain JSON (`send`)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        ledger: RequestLedger,
        *,
        retry: RetryPolicy = RETRY,
        rate: RateLimiter = UNLIMITED,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.client = api_client
        self.ledger = ledger
        self.retry = retry
        self.rate = rate
        self._sleep = sleep

    async def _call(self, job: JobKey, verb: str, fn: Callable[[], T]) -> T:
        """One request, retried per `self.retry` while the answer says "not now"; each try is counted."""
        for attempt in range(len(self.retry.backoffs) + 1):
            await self.rate.acquire()
            self.ledger.count(job, verb)
            try:
                return await asyncio.to_thread(fn)
            except Exception as exc:
                reason = retry_reason(exc)
                if reason is None or attempt == len(self.retry.backoffs):
                    raise  # final, or retries used up: the job loop's own backoff takes over
                metrics.API_RETRIES.labels(reason=reason).inc()
                await self._sleep(self.retry.delay(attempt, retry_after(exc)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(self, job: JobKey, verb: str, request: Request) -> bytes:
        return await self._call(job, verb, lambda: send(self.client, request))

    async def _create(self, job: JobKey, url_path: str, body: Mapping[str, Any]) -> bool:
        """Create-if-absent: True if created, False if it already existed (409, also a retried create whose
        first try landed)."""
        try:
            await self._send(job, "create", Request("POST", url_path, body=body))
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _delete(self, job: JobKey, url_path: str) -> None:
        """Delete-if-present: 404 is success."""
        try:
            await self._send(job, "delete", Request("DELETE", url_path))
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    async def create_pod(self, job: JobKey, body: Mapping[str, Any]) -> bool:
        """True if created, False if it already existed."""
        try:
            return await self._create(job, namespaced(job[0], "pods"), body)
        except client.ApiException as exc:
            if exc.status in rejections.REJECTION_CODES:
                name = str(body["metadata"]["name"])
                raise PodRejectedError(name, int(exc.status), api_message(exc)) from exc
            raise

    async def delete_pod(self, job: JobKey, name: str) -> None:
        await self._delete(job, namespaced(job[0], "pods", name))

    async def delete_active_pods(self, job: JobKey) -> None:
        """Every pod of the job that has not ended, in one request (the API server deletes each with its
        grace period, as a delete of each would); Failed and Succeeded pods stay for their logs."""
        namespace, name = job
        selectors = (
            ("labelSelector", f"{constants.LABEL_JOB_NAME}={name}"),
            ("fieldSelector", ACTIVE_POD_PHASES),
        )
        await self._send(job, "deletecollection", Request("DELETE", namespaced(namespace, "pods"), selectors))

    async def ensure_service(self, job: JobKey, body: Mapping[str, Any]) -> None:
        await self._create(job, namespaced(job[0], "services"), body)

    async def ensure_claim(self, job: JobKey, body: Mapping[str, Any]) -> None:
        """Create-if-absent: an existing claim (an earlier attempt's, or a retained one) is kept as is."""
        await self._create(job, namespaced(job[0], "persistentvolumeclaims"), body)

    async def _create_namespaced(self, job: JobKey, body: Mapping[str, Any], plural: str) -> None:
        """Create-if-absent of a namespaced object of any API group."""
        group, version = str(body["apiVersion"]).split("/")
        await self._create(job, namespaced(job[0], plural, group=group, version=version), body)

    async def ensure_podgroup(self, job: JobKey, body: Mapping[str, Any]) -> None:
        try:
            await self._create_namespaced(job, body, "podgroups")
        except client.ApiException as exc:
            if exc.status == 404:
                raise PodGroupUnavailableError(
                    f"{body['apiVersion']} podgroups is not served: install that scheduler, or for "
                    "kubernetes turn on its feature gates and API (docs/scheduling.md)"
                ) from exc
            raise

    async def ensure_claim_template(self, job: JobKey, body: Mapping[str, Any]) -> None:
        try:
            await self._create_namespaced(job, body, "resourceclaimtemplates")
        except client.ApiException as exc:
            if exc.status == 404:
                raise ClaimsUnavailableError(
                    f"{body['apiVersion']} resourceclaimtemplates is not served (DRA needs Kubernetes 1.34+)"
                ) from exc
            raise

    async def _delete_namespaced(self, job: JobKey, body: Mapping[str, Any], plural: str) -> None:
        """Delete-if-present of a namespaced object of any API group (an API not served: none to delete)."""
        group, version = str(body["apiVersion"]).split("/")
        name = str(body["metadata"]["name"])
        await self._delete(job, namespaced(job[0], plural, name, group=group, version=version))

    async def delete_podgroup(self, job: JobKey, body: Mapping[str, Any]) -> None:
        await self._delete_namespaced(job, body, "podgroups")

    async def delete_claim_template(self, job: JobKey, body: Mapping[str, Any]) -> None:
        await self._delete_namespaced(job, body, "resourceclaimtemplates")

    def _job_path(self, job: JobKey, *rest: str) -> str:
        return namespaced(
            job[0], constants.PLURAL, job[1], *rest, group=constants.GROUP, version=constants.VERSION
        )

    async def patch_status(
        self, job: JobKey, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch status; with a resourceVersion the write fails (409) if the job changed since."""
        patch: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        request = Request("PATCH", self._job_path(job, "status"), body=patch, content_type=MERGE_PATCH)
        answer = await self._send(job, "patch", request)
        return dict(json.loads(answer))

    async def delete_job(self, job: JobKey) -> None:
        await self._delete(job, self._job_path(job))

    async def post_event(self, job: JobKey, uid: str, kind: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{job[1]}.{secrets.token_hex(8)}", "namespace": job[0]},
            "involvedObject": {
                "apiVersion": constants.API_VERSION,
                "kind": constants.KIND,
                "name": job[1],
                "namespace": job[0],
                "uid": uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": constants.MANAGED_BY},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._create(job, namespaced(job[0], "events"), body)

    async def list_pods(self, job: JobKey) -> list[dict[str, Any]]:
        """The job's pods as the API server has them now (not the watch's view), as plain pod bodies."""
        selector = (("labelSelector", f"{constants.LABEL_JOB_NAME}={job[1]}"),)
        answer = await self._send(job, "list", Request("GET", namespaced(job[0], "pods"), selector))
        return list(json.loads(answer).get("items") or [])


def api_message(exc: client.ApiException) -> str:
    """The Status message the API server sent (the admission plugin's or validation's own words)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or exc.status)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 409
