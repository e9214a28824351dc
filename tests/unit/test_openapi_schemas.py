"""Structural validation from Kubernetes' own OpenAPI schemas (kubernetes-validate, pinned
version): every field Kubernetes has is known with its type, nothing else is, and the lab's
one-line errors and "did you mean" hints are kept."""

from __future__ import annotations

from typing import Any

import pytest

from netns_lab.errors import ScenarioError
from netns_lab.scenario import openapi
from netns_lab.scenario.manifests import parse_object
from netns_lab.scenario.yamlsrc import Source

POD_SPEC: dict[str, Any] = {"containers": [{"name": "c", "image": "netexec"}]}


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {**POD_SPEC, **spec}}


def parse(obj: dict[str, Any]) -> Any:
    return parse_object(Source("m.yaml", obj), obj, "")


def test_the_pinned_version_has_every_definition_the_lab_reads() -> None:
    assert openapi.KUBERNETES_VERSION == "1.34.0"
    defs = openapi.definitions()
    for name in ("io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Service", "io.k8s.api.core.v1.Namespace", "io.k8s.api.core.v1.Secret",
                 "io.k8s.api.networking.v1.Ingress", "io.k8s.api.networking.v1.IngressClass",
                 "io.k8s.api.networking.v1.NetworkPolicy", "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"):
        assert name in defs


def test_fields_the_lab_does_not_act_on_are_still_typed() -> None:
    # an environment variable's value is a string in Kubernetes: 1 is refused, as kubectl refuses it
    with pytest.raises(ScenarioError, match=r"spec.containers\[0\].env\[0\].value: Invalid type: expected string, got integer 1"):
        parse(pod(containers=[{"name": "c", "image": "i", "env": [{"name": "A", "value": 1}]}]))
    # and what Kubernetes has is accepted, even what no hand-written schema listed
    parse(pod(containers=[{"name": "c", "image": "i", "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                           "resources": {"limits": {"cpu": 0.5, "memory": "64Mi"}, "requests": {"cpu": "100m"}}}],
              tolerations=[{"key": "k", "operator": "Exists"}], priorityClassName="high"))


@pytest.mark.parametrize("obj, expected", [
    (pod(nodeSelecter={"a": "b"}), 'spec.nodeSelecter: unknown field "nodeSelecter": field not declared in schema io.k8s.api.core.v1.PodSpec; did you mean "nodeSelector"?'),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labls": {}}, "spec": POD_SPEC},
     'metadata.labls: unknown field "labls": field not declared in schema io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta; did you mean "labels"?'),
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "eighty"}]}},
     'spec.ports[0].port: Invalid type: expected integer, got string "eighty"'),
    ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "immutable": "yes"}, 'immutable: Invalid type: expected boolean, got string "yes"'),
    ({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
      "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"serviceName": "a", "servicePort": 80}}]}}]}},
     'unknown field "serviceName": field not declared in schema io.k8s.api.networking.v1.IngressBackend (removed with extensions/v1beta1'),
])
def test_mistakes_are_one_line_with_the_definition_and_a_hint(obj: dict[str, Any], expected: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse(obj)
    assert expected in str(exc.value), str(exc.value)
