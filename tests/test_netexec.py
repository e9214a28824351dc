"""netexec, the in-pod server: its protocol, silence handling and live reconfiguration."""

from __future__ import annotations

import json
import os
import signal
import time
import socket

import pytest

from netns_lab import atomic

from netns_lab.lab import Lab
from netns_lab.probes.connect import Probe, run_probes
from netns_lab.realize.netns import run_in
from netns_lab.services.netexec import http_reply, line_reply
from tests.conftest import ROOT

BASIC = os.path.join(ROOT, "scenarios", "basic.yaml")


def test_reply_formats() -> None:
    assert line_reply("web-1", ("10.244.0.3", 4242)) == b"web-1 10.244.0.3:4242\n"
    raw = http_reply("web-1", ("10.244.0.3", 4242), b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nweb-1")
    assert http_reply("w", ("1.2.3.4", 5), b"GET /clientip HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n1.2.3.4:5")
    body = http_reply("w", ("1.2.3.4", 5), b"POST /a/b?x=1 HTTP/1.1\r\nHost: a.example.com\r\nX-Test: yes\r\n\r\n")
    doc = json.loads(body.split(b"\r\n\r\n", 1)[1])
    assert doc == {
        "pod": "w", "client": "1.2.3.4:5", "method": "POST", "path": "/a/b?x=1", "host": "a.example.com",
        "headers": {"Host": "a.example.com", "X-Test": "yes"},
    }


@pytest.mark.root
def test_http_paths_through_the_network(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab: Lab = lab_factory(BASIC)
    src, ip = lab.netns_of("pod/client-2"), lab.ip_of("pod/web-1")
    results = run_probes([Probe(src, ip, 9376, "http", p) for p in ("/hostname", "/clientip", "/x/y")])
    assert [r.status for r in results] == [200, 200, 200]
    assert results[0].body == "web-1"
    assert results[1].body.split(":")[0] == lab.ip_of("pod/client-2")
    assert json.loads(results[2].body)["path"] == "/x/y"


@pytest.mark.root
def test_silent_client_still_gets_its_line(lab_factory) -> None:  # type: ignore[no-untyped-def]
    """A client that sends nothing (nc, telnet) gets the line after a second of silence."""
    lab: Lab = lab_factory(BASIC)

    def silent() -> bytes:
        with socket.create_connection((lab.ip_of("pod/web-2"), 9376), timeout=3) as s:
            return s.recv(200)

    data = run_in(lab.netns_of("pod/client-1"), silent)
    assert data.decode().startswith(f"web-2 {lab.ip_of('pod/client-1')}:")


@pytest.mark.root
def test_sighup_reloads_targets() -> None:
    with Lab.from_file(BASIC, {"name": "reload"}) as lab:
        assert lab.state is not None
        config = os.path.join(lab.state.workdir, "netexec.json")
        with open(config) as fh:
            doc = json.load(fh)
        target = next(t for t in doc["targets"] if t["name"] == "web-1")
        target["ports"] = [9376, 7000]
        atomic.write(config, json.dumps(doc))  # as the lab writes it: netexec may be reading it right now
        assert lab.connect("pod/client-1", "pod/web-1", 7000).result == "refused"
        os.kill(lab.state.processes[0]["pid"], signal.SIGHUP)
        for _ in range(250):  # until netexec has handled the signal (bounded: 5 s)
            r = lab.connect("pod/client-1", "pod/web-1", 7000)
            if r.result == "ok":
                break
            time.sleep(0.02)
        assert r.result == "ok" and r.served_by == "web-1"
        assert lab.connect("pod/client-1", "pod/web-1", 7000, "udp").result == "ok"


def test_node_agents_tell_the_lab_phase_and_pods_do_not() -> None:
    from netns_lab.lab import PHASE_URL
    from netns_lab.probes.http import get

    with Lab.from_file(BASIC, {"name": "phase"}) as lab:
        node1, node2 = lab.topology.nodes[:2]
        assert lab.agent_phase(node2) == "up"  # `up` returns only once the agents say so
        lab.mark_checked()
        assert lab.agent_phase(node1) == lab.agent_phase(node2) == "checked"
        web = lab.topology.pod("web-1")
        r = get(node1.netns, PHASE_URL, str(web.ip), web.ports[0][0])
        assert r.result == "ok" and json.loads(r.body)["path"] == "/netns-lab/phase"  # a pod just echoes the request
