"""`load()`: a manifest dict -> TrainingJob, applying the CRD's defaults and enforcing its rules."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from torchjob_core import constants, quantity, sizing
from torchjob_core.spec.errors import FieldError, SpecError
from torchjob_core.spec.reader import Reader, json_type, map_list
from torchjob_core.spec.rules import (
    ABS_PATH_PATTERN,
    ENV_NAME_PATTERN,
    EXIT_OVERLAP_MSG,
    GANG_SCHEDULER_MSG,
    GPU_RESOURCE_PATTERN,
    IMAGE_MSG,
    LABEL_VALUE_PATTERN,
    MANAGED_BY_PATTERN,
    MAX_ARGS,
    MAX_ENV,
    MAX_MANAGED_BY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_NETWORK_INTERFACE_LENGTH,
    MAX_NODES_MSG,
    MAX_RESOURCES,
    MAX_STRING_LENGTH,
    MAX_TEMPLATE_CONTAINERS,
    MAX_VOLUMES,
    MIN_NODES_MSG,
    MOUNT_MSG,
    NCCL_MSG,
    NETWORK_INTERFACE_PATTERN,
    RESERVED_MSG,
    RESERVED_VOLUME_MSG,
    SHM_PATH_MSG,
    is_reserved_env,
)
from torchjob_core.spec.types import (
    JSON,
    Checkpoint,
    DataLoader,
    Elastic,
    Metadata,
    Metrics,
    Resources,
    RunPolicy,
    Scheduling,
    SharedMemory,
    TrainingJob,
    TrainingJobSpec,
    template_container,
)


def _metadata(root: Reader) -> Metadata:
    meta = root.child_or_empty("metadata")
    name = meta.string("name", max_length=constants.MAX_JOB_NAME_LENGTH, pattern=constants.DNS_LABEL_PATTERN)
    if name is None:
        meta.required("name")
    namespace = meta.string("namespace", "default", max_length=63)
    uid = meta.string("uid", "")
    generation = meta.integer("generation", 0)
    labels = meta.string_map("labels", max_properties=10_000)
    annotations = meta.string_map("annotations", max_properties=10_000)
    meta.known.update(meta.data)  # other metadata is the apiserver's business
    return Metadata(
        name=name or "",
        namespace=namespace or "default",
        uid=uid or "",
        generation=generation or 0,
        labels=labels,
        annotations=annotations,
    )


def _resources(spec: Reader) -> Resources:
    r = spec.child_or_empty("resources")
    gpus = r.integer("gpusPerNode", 0, maximum=constants.MAX_GPUS_PER_NODE)
    gpu_name = r.string(
        "gpuResourceName",
        constants.DEFAULT_GPU_RESOURCE,
        pattern=GPU_RESOURCE_PATTERN,
        max_length=MAX_NAME_LENGTH,
    )
    requests = r.string_map("requests", max_properties=MAX_RESOURCES, quantities=True)
    limits = r.string_map("limits", max_properties=MAX_RESOURCES, quantities=True)
    assert gpu_name is not None
    for key, values in (("limits", limits), ("requests", requests)):
        if gpu_name in values:
            r.error(
                key,
                f'Invalid value: "object": must not set {gpu_name}: set spec.resources.gpusPerNode instead',
            )
    r.finish()
    return Resources(gpus_per_node=gpus or 0, gpu_resource_name=gpu_name, requests=requests, limits=limits)


def _env(spec: Reader) -> tuple[JSON, ...]:
    env = map_list(spec, "env", required=("name",), max_items=MAX_ENV)
    for i, item in enumerate(env):
        name = item.get("name")
        if "value" in item and not isinstance(item["value"], str):
            spec.errors.append(
                FieldError(
                    f"{spec.at('env')}[{i}].value",
                    f'Invalid value: "{json_type(item["value"])}": must be of type string',
                )
            )
        if isinstance(name, str) and is_reserved_env(name):
            spec.errors.append(
                FieldError(f"{spec.at('env')}[{i}].name", f'Invalid value: "{name}": {RESERVED_MSG}')
            )
        elif isinstance(name, str) and re.search(ENV_NAME_PATTERN, name) is None:
            spec.errors.append(
                FieldError(
                    f"{spec.at('env')}[{i}].name",
                    f"Invalid value: \"{name}\": should match '{ENV_NAME_PATTERN}'",
                )
            )
    return env


def _volumes(spec: Reader) -> tuple[tuple[JSON, ...], tuple[JSON, ...]]:
    volumes = map_list(spec, "volumes", required=("name",), max_items=MAX_VOLUMES)
    mounts = map_list(spec, "volumeMounts", required=("name", "mountPath"), max_items=MAX_VOLUMES)
    names = {v.get("name") for v in volumes}
    for i, v in enumerate(volumes):
        if v.get("name") in constants.RESERVED_VOLUME_NAMES:
            spec.errors.append(
                FieldError(
                    f"{spec.at('volumes')}[{i}].name",
                    f'Invalid value: "{v.get("name")}": {RESERVED_VOLUME_MSG}',
                )
            )
    for i, m in enumerate(mounts):
        if m.get("mountPath") == constants.SHM_MOUNT_PATH:
            spec.errors.append(
                FieldError(
                    f"{spec.at('volumeMounts')}[{i}].mountPath", f'Invalid value: "/dev/shm": {SHM_PATH_MSG}'
                )
            )
    if any(m.get("name") not in names for m in mounts):
        spec.error("volumeMounts", f'Invalid value: "array": {MOUNT_MSG}')
    return volumes, mounts


def _data_loader(spec: Reader) -> DataLoader:
    d = spec.child_or_empty("dataLoader")
    num_workers = d.int_or_auto("numWorkers", minimum=0, maximum=constants.MAX_NUM_WORKERS)
    pin = d.string("pinMemory", "auto", enum=constants.PIN_MEMORY_VALUES)
    persistent = d.boolean("persistentWorkers", True)
    prefetch = d.integer(
        "prefetchFactor", constants.DEFAULT_PREFETCH_FACTOR, minimum=1, maximum=constants.MAX_PREFETCH_FACTOR
    )
    hint = d.quantity("batchBytesHint", constants.DEFAULT_BATCH_BYTES_HINT)
    if hint is not None and quantity.is_quantity(hint) and quantity.parse(hint) <= 0:
        d.error("batchBytesHint", f'Invalid value: "{hint}": must be greater than 0')
    d.finish()
    return DataLoader(
        num_workers=num_workers,
        pin_memory=pin if pin in constants.PIN_MEMORY_VALUES else "auto",  # type: ignore[arg-type]
        persistent_workers=persistent,
        prefetch_factor=prefetch or constants.DEFAULT_PREFETCH_FACTOR,
        batch_bytes_hint=hint or constants.DEFAULT_BATCH_BYTES_HINT,
    )


def _shared_memory(spec: Reader) -> SharedMemory:
    s = spec.child_or_empty("sharedMemory")
    size = s.quantity("sizeLimit")
    if size is not None and quantity.is_quantity(size) and quantity.parse(size) <= 0:
        s.error("sizeLimit", f'Invalid value: "{size}": must be greater than 0')
    s.finish()
    return SharedMemory(size_limit=size)


def _elastic(spec: Reader, nodes: int) -> Elastic | None:
    e = spec.child("elastic")
    if e is None:
        return None
    min_nodes = e.integer(
        "minNodes", constants.DEFAULT_ELASTIC_MIN_NODES, minimum=1, maximum=constants.MAX_NODES
    )
    max_nodes = e.integer("maxNodes", None, minimum=1, maximum=constants.MAX_NODES)
    restarts = e.integer(
        "maxRestarts", constants.DEFAULT_ELASTIC_MAX_RESTARTS, maximum=constants.MAX_ELASTIC_RESTARTS
    )
    e.finish()
    if max_nodes is None:
        e.required("maxNodes")
        max_nodes = nodes
    assert min_nodes is not None and restarts is not None
    if min_nodes > nodes:
        e.error("minNodes", f"Invalid value: {min_nodes}: {MIN_NODES_MSG}")
    if nodes > max_nodes:
        e.error("maxNodes", f"Invalid value: {max_nodes}: {MAX_NODES_MSG}")
    return Elastic(min_nodes=min_nodes, max_nodes=max_nodes, max_restarts=restarts)


def _run_policy(spec: Reader) -> RunPolicy:
    p = spec.child_or_empty("runPolicy")
    backoff_limit = p.integer(
        "backoffLimit", constants.DEFAULT_BACKOFF_LIMIT, maximum=constants.MAX_BACKOFF_LIMIT
    )
    backoff_seconds = p.integer(
        "backoffSeconds", constants.DEFAULT_BACKOFF_SECONDS, maximum=constants.MAX_BACKOFF_SECONDS
    )
    retryable = p.int_list(
        "retryableExitCodes", constants.DEFAULT_RETRYABLE_EXIT_CODES, minimum=1, maximum=255
    )
    permanent = p.int_list("permanentExitCodes", (), minimum=1, maximum=255)
    overlap = sorted(set(retryable) & set(permanent))
    if overlap:
        p.error("permanentExitCodes", f'Invalid value: "array": {EXIT_OVERLAP_MSG}')
    policy = RunPolicy(
        backoff_limit=backoff_limit if backoff_limit is not None else constants.DEFAULT_BACKOFF_LIMIT,
        backoff_seconds=backoff_seconds if backoff_seconds is not None else constants.DEFAULT_BACKOFF_SECONDS,
        retryable_exit_codes=retryable,
        permanent_exit_codes=permanent,
        active_deadline_seconds=p.integer("activeDeadlineSeconds", None, minimum=1),
        startup_deadline_seconds=p.integer("startupDeadlineSeconds", None, minimum=1),
        ttl_seconds_after_finished=p.integer("ttlSecondsAfterFinished", None, minimum=0),
        clean_pod_policy=p.string(  # type: ignore[arg-type]
            "cleanPodPolicy", constants.DEFAULT_CLEAN_POD_POLICY, enum=constants.CLEAN_POD_POLICIES
        ),
        suspend=p.boolean("suspend", False),
    )
    p.finish()
    return policy


def _scheduling(spec: Reader) -> Scheduling:
    s = spec.child_or_empty("scheduling")
    gang = s.boolean("gang", False)
    scheduler = s.string("gangScheduler", enum=constants.GANG_SCHEDULERS)
    queue = s.string("queue", max_length=63, pattern=LABEL_VALUE_PATTERN)
    s.finish()
    if scheduler is not None and not gang:
        s.error("gangScheduler", f'Invalid value: "{scheduler}": {GANG_SCHEDULER_MSG}')
    return Scheduling(gang=gang, gang_scheduler=scheduler, queue=queue or None)


def _template(spec: Reader) -> JSON:
    """The PodTemplateSpec escape hatch: only the fields admission types are checked."""
    t = spec.child("template")
    if t is None:
        return {}
    meta = t.child("metadata")
    if meta is not None:
        meta.string_map("labels")
        meta.string_map("annotations")
        meta.known.update(meta.data)
    pod = t.child("spec")
    if pod is not None:
        for c in pod.object_list("containers", max_items=MAX_TEMPLATE_CONTAINERS):
            if c.string("name", max_length=63) is None:
                c.required("name")
            c.string("image", max_length=MAX_STRING_LENGTH)
    t.finish()
    return copy.deepcopy(dict(t.data))


def _spec(root: Reader) -> TrainingJobSpec:
    s = root.child("spec")
    if s is None:
        root.required("spec")
        s = Reader({}, "spec", root.errors)
    image = s.string("image", min_length=1)
    managed_by = s.string(
        "managedBy", constants.CONTROLLER_NAME, pattern=MANAGED_BY_PATTERN, max_length=MAX_MANAGED_BY_LENGTH
    )
    pull = s.string("imagePullPolicy", enum=constants.IMAGE_PULL_POLICIES)
    command = s.string_list("command", constants.DEFAULT_COMMAND, max_items=MAX_ARGS)
    if not command:
        s.error("command", "Invalid value: 0: should have at least 1 items")
    args = s.string_list("args", (), max_items=MAX_ARGS)
    launcher = s.string("launcher", "torchjob", enum=constants.LAUNCHERS)
    nodes = s.integer("nodes", constants.DEFAULT_NODES, minimum=1, maximum=constants.MAX_NODES)
    procs = s.int_or_auto("procsPerNode", minimum=1, maximum=constants.MAX_PROCS_PER_NODE)
    backend = s.string("backend", "auto", enum=constants.BACKENDS)
    resources = _resources(s)
    env = _env(s)
    env_from = tuple(copy.deepcopy(dict(r.data)) for r in s.object_list("envFrom", max_items=MAX_ENV))
    volumes, mounts = _volumes(s)
    node_selector = s.string_map("nodeSelector")
    tolerations = tuple(copy.deepcopy(dict(r.data)) for r in s.object_list("tolerations", max_items=MAX_ENV))
    affinity = s.raw_object("affinity")
    priority = s.string("priorityClassName", max_length=MAX_NAME_LENGTH)
    scheduler = s.string("schedulerName", max_length=MAX_NAME_LENGTH)
    service_account = s.string("serviceAccountName", max_length=MAX_NAME_LENGTH)
    automount = s.boolean("automountServiceAccountToken", False)
    debug = s.boolean("debug", False)
    interface = s.string(
        "networkInterface", pattern=NETWORK_INTERFACE_PATTERN, max_length=MAX_NETWORK_INTERFACE_LENGTH
    )
    data_loader = _data_loader(s)
    shared_memory = _shared_memory(s)
    ckpt = s.child_or_empty("checkpoint")
    checkpoint = Checkpoint(
        dir=ckpt.string("dir", constants.DEFAULT_CHECKPOINT_DIR, pattern=ABS_PATH_PATTERN, max_length=1024)
        or constants.DEFAULT_CHECKPOINT_DIR
    )
    ckpt.finish()
    met = s.child_or_empty("metrics")
    metrics = Metrics(port=met.integer("port", constants.DEFAULT_METRICS_PORT, maximum=65535) or 0)
    met.finish()
    nodes = nodes or constants.DEFAULT_NODES
    elastic = _elastic(s, nodes)
    run_policy = _run_policy(s)
    scheduling = _scheduling(s)
    template = _template(s)
    s.finish()

    trainer = template_container(template)
    if image is None and (trainer is None or not trainer.get("image")):
        s.error("image", f"Required value: {IMAGE_MSG}")
    if backend == "nccl" and resources.gpus_per_node == 0:
        s.error("backend", f'Invalid value: "nccl": {NCCL_MSG}')

    return TrainingJobSpec(
        image=image,
        managed_by=managed_by or constants.CONTROLLER_NAME,
        image_pull_policy=pull,
        command=command,
        args=args,
        launcher=launcher if launcher in constants.LAUNCHERS else "torchjob",  # type: ignore[arg-type]
        nodes=nodes,
        procs_per_node=procs,
        backend=backend if backend in constants.BACKENDS else "auto",  # type: ignore[arg-type]
        resources=resources,
        env=env,
        env_from=env_from,
        volumes=volumes,
        volume_mounts=mounts,
        node_selector=node_selector,
        tolerations=tolerations,
        affinity=affinity,
        priority_class_name=priority or None,
        scheduler_name=scheduler or None,
        service_account_name=service_account or None,
        automount_service_account_token=automount,
        debug=debug,
        network_interface=interface or None,
        data_loader=data_loader,
        shared_memory=shared_memory,
        checkpoint=checkpoint,
        metrics=metrics,
        elastic=elastic,
        run_policy=run_policy,
        scheduling=scheduling,
        template=template,
    )


def _check_memory(spec: TrainingJobSpec, errors: list[FieldError]) -> None:
    """/dev/shm pages count against the memory limit: limit >= request + shm, or reject.

    Not a CEL rule: the apiserver prices quantity arithmetic on requests/limits map values far over the
    CRD cost budget, so the operator (job Failed, reason InvalidSpec) and the CLI enforce it.
    """
    limit = spec.resources.limits.get("memory")
    if limit is None:
        return
    request = spec.resources.requests.get("memory", "0")
    shm = sizing.shm_bytes(spec)
    need = quantity.to_bytes(request) + shm
    if quantity.to_bytes(limit) < need:
        errors.append(
            FieldError(
                "spec.resources.limits.memory",
                f'Invalid value: "{limit}": must be at least requests.memory ({request}) + /dev/shm '
                f"sizeLimit ({quantity.format_bytes(shm)}) = {quantity.format_bytes(need)}, because /dev/shm "
                "pages count against the memory limit; raise limits.memory or set "
                "spec.sharedMemory.sizeLimit",
            )
        )


def load(manifest: Mapping[str, Any]) -> TrainingJob:
    """Parse and validate a whole TrainingJob manifest, applying the CRD's defaults.

    Raises SpecError naming the JSON path of each invalid field.
    """
    if not isinstance(manifest, Mapping):
        raise SpecError(
            "", f'Invalid value: "{json_type(manifest)}": a TrainingJob manifest must be an object'
        )
    errors: list[FieldError] = []
    root = Reader(manifest, "", errors)
    api_version = root.string("apiVersion")
    kind = root.string("kind")
    if api_version is not None and api_version != constants.API_VERSION:
        root.error(
            "apiVersion", f'Unsupported value: "{api_version}": supported values: "{constants.API_VERSION}"'
        )
    if kind is not None and kind != constants.KIND:
        root.error("kind", f'Unsupported value: "{kind}": supported values: "{constants.KIND}"')
    metadata = _metadata(root)
    spec = _spec(root)
    root.known.add("status")
    root.finish()
    if not errors:
        _check_memory(spec, errors)
    if errors:
        raise SpecError(errors[0].field, errors[0].message, errors)
    return TrainingJob(metadata=metadata, spec=spec)
