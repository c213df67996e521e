"""The only module that talks to the Kubernetes API (besides Kopf's own watches).

Every request is counted per TrainingJob (`RequestLedger`) and in
`torchjob_operator_api_requests_total{verb}`. Creates treat 409 as success and deletes treat 404 as
success, so every pass can be repeated safely. The client is synchronous; calls run in threads.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from torchjob_core import constants

from torchjob_operator import metrics, rejections
from torchjob_operator.actuate import ClaimsUnavailableError, PodGroupUnavailableError, PodRejectedError

JobKey = tuple[str, str]  # (namespace, name)
USER_AGENT = constants.MANAGED_BY
# For creates whose response we do not read: the client's model of a created pod costs more CPU than
# the request itself (profiled: most of a create's time in the thread was building that V1Pod).
RAW: dict[str, Any] = {"_preload_content": False}
T = TypeVar("T")


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
    """Typed, counted wrappers over the few calls the operator makes."""

    def __init__(self, api_client: client.ApiClient, ledger: RequestLedger) -> None:
        # The client's generated models are not worth typing against: we send and read plain dicts.
        self.core: Any = client.CoreV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.ledger = ledger

    async def _call(self, job: JobKey, verb: str, fn: Callable[[], T]) -> T:
        self.ledger.count(job, verb)
        return await asyncio.to_thread(fn)

    async def create_pod(self, job: JobKey, body: Mapping[str, Any]) -> bool:
        """True if created, False if it already existed."""
        try:
            await self._call(
                job, "create", lambda: self.core.create_namespaced_pod(job[0], dict(body), **RAW)
            )
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status in rejections.REJECTION_CODES:
                name = str(body["metadata"]["name"])
                raise PodRejectedError(name, int(exc.status), api_message(exc)) from exc
            raise
        return True

    async def delete_pod(self, job: JobKey, name: str) -> None:
        try:
            await self._call(job, "delete", lambda: self.core.delete_namespaced_pod(name, job[0]))
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    async def ensure_service(self, job: JobKey, body: Mapping[str, Any]) -> None:
        try:
            await self._call(
                job, "create", lambda: self.core.create_namespaced_service(job[0], dict(body), **RAW)
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    async def ensure_claim(self, job: JobKey, body: Mapping[str, Any]) -> None:
        """Create-if-absent: an existing claim (an earlier attempt's, or a retained one) is kept as is."""
        try:
            await self._call(
                job,
                "create",
                lambda: self.core.create_namespaced_persistent_volume_claim(job[0], dict(body)),
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    async def _create_namespaced(self, job: JobKey, body: Mapping[str, Any], plural: str) -> None:
        """Create-if-absent of a namespaced object of any API group (409: it exists, which is success)."""
        group, version = str(body["apiVersion"]).split("/")
        try:
            await self._call(
                job,
                "create",
                lambda: self.custom.create_namespaced_custom_object(
                    group, version, job[0], plural, dict(body)
                ),
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise

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

    async def patch_status(
        self, job: JobKey, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch status; with a resourceVersion the write fails (409) if the job changed since."""
        patch: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        result = await self._call(
            job,
            "patch",
            lambda: self.custom.patch_namespaced_custom_object_status(
                constants.GROUP, constants.VERSION, job[0], constants.PLURAL, job[1], patch
            ),
        )
        return dict(result)

    async def delete_job(self, job: JobKey) -> None:
        try:
            await self._call(
                job,
                "delete",
                lambda: self.custom.delete_namespaced_custom_object(
                    constants.GROUP, constants.VERSION, job[0], constants.PLURAL, job[1]
                ),
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    async def post_event(self, job: JobKey, uid: str, kind: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
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
        await self._call(job, "create", lambda: self.core.create_namespaced_event(job[0], body, **RAW))

    async def list_pods(self, job: JobKey) -> list[dict[str, Any]]:
        """The job's pods as the API server has them now (not the watch's view), as plain pod bodies."""
        selector = f"{constants.LABEL_JOB_NAME}={job[1]}"
        # Raw JSON: observe_pod reads the API's own field names, not the client's models.
        response = await self._call(
            job,
            "list",
            lambda: self.core.list_namespaced_pod(job[0], label_selector=selector, _preload_content=False),
        )
        return list(json.loads(response.data).get("items") or [])


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
