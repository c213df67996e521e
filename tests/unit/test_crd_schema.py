"""The generated CRD: documented, structural, CEL rules naming fields, defaults equal to spec.load's."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from torchjob_core import constants, crd, spec
from torchjob_core.spec import api

ROOT = Path(__file__).resolve().parents[2]
CRD = crd.crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


NODES = [(p, n) for p, n in walk(SCHEMA, "") if not p.startswith(".metadata")]


def test_every_field_has_a_description() -> None:
    missing = [p for p, n in NODES if not n.get("description") and not p.endswith(("[]", "{}"))]
    assert missing == []


def test_schema_is_structural() -> None:
    untyped = [
        p
        for p, n in NODES
        if "type" not in n
        and not n.get("x-kubernetes-int-or-string")
        and not n.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []


def test_every_array_and_map_is_bounded() -> None:
    assert [p for p, n in NODES if n.get("type") == "array" and "maxItems" not in n] == []
    maps = [p for p, n in NODES if isinstance(n.get("additionalProperties"), dict)]
    assert maps and all("maxProperties" in dict(NODES)[p] for p in maps)


def test_cel_rules_have_messages_and_spec_rules_name_fields() -> None:
    rules = [(p, r) for p, n in NODES for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 12
    assert all(r["message"] for _, r in rules)
    spec_rules = [r for p, r in rules if p == ".spec"]
    assert {r["fieldPath"] for r in spec_rules} == {
        ".image",
        ".elastic.minNodes",
        ".elastic.maxNodes",
        ".backend",
        ".volumeMounts",
        ".managedBy",
        ".resources.limits.memory",
    }


def test_spec_outside_run_policy_is_frozen_unless_suspended() -> None:
    rules = {r["fieldPath"]: r for r in SCHEMA["x-kubernetes-validations"]}
    frozen = {f".spec.{n}" for n in SCHEMA["properties"]["spec"]["properties"]} - {
        ".spec.runPolicy",  # read afresh by every pass
        ".spec.managedBy",  # its own rules: immutable always
        ".spec.checkpoint",  # split below
    }
    assert set(rules) == frozen | {".spec.checkpoint.dir", ".spec.checkpoint.storage"}
    for path in frozen | {".spec.checkpoint.dir"}:
        rule = rules[path]
        assert "oldSelf.spec.runPolicy.suspend" in rule["rule"] and "oldSelf.status.phase" in rule["rule"]
        assert f"self{path} == oldSelf{path}" in rule["rule"]
        assert rule["message"].startswith(f"{path[1:]} is immutable while the job runs: suspend it")
    storage = rules[".spec.checkpoint.storage"]
    assert "suspend" not in storage["rule"] and "is immutable" in storage["message"]


def test_transition_rules_are_left_to_admission() -> None:
    # The CLI's load sees one version: a rule with oldSelf has no Python predicate to run there.
    rules = [*api.ROOT_RULES, *api.SPEC.properties["managedBy"].rules]
    assert rules and all("oldSelf" in r.cel and r.holds is None for r in rules)
    job = spec.load({"metadata": {"name": "j"}, "spec": {"image": "i", "runPolicy": {"suspend": False}}})
    assert job.spec.nodes == 1


def test_reserved_env_rule_lists_every_reserved_name() -> None:
    (rule,) = SCHEMA["properties"]["spec"]["properties"]["env"]["items"]["x-kubernetes-validations"]
    for name in (*constants.RESERVED_ENV_NAMES, *constants.RESERVED_ENV_PREFIXES):
        assert f"'{name}'" in rule["rule"]
    assert rule["fieldPath"] == ".name"


def test_names_columns_and_status_subresource() -> None:
    assert CRD["metadata"]["name"] == "trainingjobs.torchjob.dev"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "TrainingJob",
        "trainingjobs",
        ["tj"],
        ["torchjob"],
    )
    assert VERSION["subresources"] == {"status": {}}
    assert [c["name"] for c in VERSION["additionalPrinterColumns"]] == [
        "Phase",
        "Nodes",
        "Restarts",
        "Progress",
        "ETA",
        "Samples/s",
        "Data-Wait",
        "Age",
        "Reason",
        "Failure",
    ]
    # Throughput, data wait (and the first failure) only with -o wide.
    wide = [c["name"] for c in VERSION["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Samples/s", "Data-Wait", "Failure"]
    status = SCHEMA["properties"]["status"]
    for column in VERSION["additionalPrinterColumns"]:
        field = column["jsonPath"].split(".")
        if field[1] == "status":
            node = status
            for key in field[2:]:
                node = node["properties"][key]
            assert node["type"] == column["type"]


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """The apiserver's structural defaulting, enough for this schema: defaults of absent properties."""
    if not isinstance(value, dict):
        return value
    out = copy.deepcopy(value)
    for name, child in (node.get("properties") or {}).items():
        if name not in out and "default" in child:
            out[name] = copy.deepcopy(child["default"])
        if name in out:
            out[name] = apply_defaults(child, out[name])
    return out


@pytest.mark.parametrize(
    "fields",
    [{}, {"elastic": {"maxNodes": 3}}, {"scheduling": {"gang": True}}, {"dataLoader": {"numWorkers": 2}}],
)
def test_schema_defaults_match_spec_load(fields: dict[str, Any]) -> None:
    manifest = {"metadata": {"name": "j"}, "spec": {"image": "i", **fields}}
    defaulted = apply_defaults(SCHEMA, manifest)
    assert defaulted["spec"]["dataLoader"]["prefetchFactor"] == constants.DEFAULT_PREFETCH_FACTOR
    assert spec.load(defaulted) == spec.load(manifest)


def without_extensions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [without_extensions(v) for v in node]
    return node


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_the_openapi_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), without_extensions(SCHEMA))


def test_module_prints_the_crd_as_yaml() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "torchjob_core.crd"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert yaml.safe_load(out) == CRD


def test_committed_manifest_matches() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "crd.yaml").read_text()) if d]
    assert docs == [CRD], "run: python hack/gen-manifests.py --crd-only"
