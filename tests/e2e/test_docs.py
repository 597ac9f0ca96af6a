"""The examples in the README and manifests/ are valid against the real API server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from testkit import Kubectl

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def readme_batmodels() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b for b in blocks if "kind: BatModel" in b]


def test_readme_has_a_batmodel_example() -> None:
    assert readme_batmodels()


@pytest.mark.parametrize("source", ["readme", "example"])
def test_batmodel_examples_pass_the_crd_schema(kubectl: Kubectl, installed: None, source: str) -> None:
    docs = readme_batmodels() if source == "readme" else [
        (REPO / "manifests" / "examples" / "batmodel.yaml").read_text()]
    for doc in docs:
        assert yaml.safe_load(doc)["kind"] == "BatModel"
        done = kubectl("apply", "--dry-run=server", "-f", "-", input=doc, namespace="default")
        assert "created (server dry run)" in done.stdout


def test_kustomization_installs_against_the_real_api_server(kubectl: Kubectl, installed: None) -> None:
    rendered = kubectl("kustomize", str(REPO / "manifests")).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
                     "Namespace", "Role", "RoleBinding", "ServiceAccount",
                     "ValidatingWebhookConfiguration"]
    done = kubectl("apply", "--dry-run=server", "-k", str(REPO / "manifests"))
    assert "deployment.apps/batcomputer-operator created (server dry run)" in done.stdout


def test_kubectl_explain_describes_what_users_set_and_read(kubectl: Kubectl, installed: None) -> None:
    for field, words in (("spec.resources.requests", "Guaranteed to each server pod"),
                         ("spec.resources.limits", "The most each server pod may use"),
                         ("spec.replicas", "0 to 50"),
                         ("status.versions.readyReplicas", "Pods Ready"),
                         ("status.observedGeneration", "generation of the spec"),
                         ("status.summary.ready", "Ready versions / listed versions"),
                         ("status.history.target", "v<major>"),
                         ("status.conditions.lastTransitionTime", "When status last changed"),
                         ("spec.rollout.strategy", "RollingUpdate (the default) or Canary")):
        explained = kubectl("explain", f"batmodels.{field}").stdout
        assert words in explained, (field, explained)
        assert "<no description>" not in explained.split("FIELDS:")[0], (field, explained)
