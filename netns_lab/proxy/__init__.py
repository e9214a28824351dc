"""kube-proxy's data plane, rendered: one Service model (:mod:`.types`), one proxier per mode.

Renderers are pure (Service ports in, rules text out) and tested against golden files;
:mod:`netns_lab.realize.proxier` applies them to node namespaces the way kube-proxy does.
"""
