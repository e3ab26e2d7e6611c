"""What `kubectl apply -k` would send, rendered in Python for the tests: kubectl is not needed to run them.

It reads the few kustomize fields deploy/kubernetes uses (resources, namespace, labels, images, configMapGenerator,
secretGenerator, patches that merge or delete) and refuses any other, so a kustomization that grows a field this
does not know fails the tests instead of being checked half. Generated names keep no hash suffix: references
to them stay as written. ``test_the_renderer_agrees_with_kubectl`` compares it with kustomize itself where
kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "secretGenerator",
    "patches",
}
CLUSTER_SCOPED = {"Namespace"}


def render(folder: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(spec) <= KNOWN, f"{folder}: fields the test renderer does not know: {set(spec) - KNOWN}"
    docs: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        path = folder / resource
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    docs += [config_map(folder, g) for g in spec.get("configMapGenerator", [])]
    docs += [secret(folder, g) for g in spec.get("secretGenerator", [])]
    for patch in spec.get("patches", []):
        docs = apply_patch(docs, patch)
    for doc in docs:
        if "namespace" in spec and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = spec["namespace"]
        for labels in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(labels["pairs"])
        for container in containers(doc):
            container["image"] = retag(container["image"], spec.get("images", []))
    return docs


def config_map(folder: Path, generator: dict[str, Any]) -> dict[str, Any]:
    data = {Path(f).name: (folder / f).read_text() for f in generator["files"]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}


def secret(folder: Path, generator: dict[str, Any]) -> dict[str, Any]:
    """A Secret from its env files; where one is missing (secrets.env stays out of git), its ``.example``."""
    data: dict[str, str] = {}
    for name in generator["envs"]:
        path = folder / name
        path = path if path.exists() else folder / f"{name}.example"
        data.update(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]}, "stringData": data}


def apply_patch(docs: list[dict[str, Any]], patch: dict[str, Any]) -> list[dict[str, Any]]:
    target = patch["target"]
    body = yaml.safe_load(patch["patch"])
    matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
    assert len(matched) == 1, f"patch target {target} matches {len(matched)} resources"
    if body.get("$patch") == "delete":
        return [d for d in docs if d is not matched[0]]
    merge(matched[0], body)
    return docs


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386), which kustomize applies to resources it has no schema for (CRDs)."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def retag(image: str, images: list[dict[str, str]]) -> str:
    name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    for entry in images:
        if entry["name"] == name:
            return f"{entry.get('newName', name)}:{entry['newTag']}"
    return image
