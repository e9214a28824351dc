"""One HTTP(S) request from inside a lab namespace, as a client outside (or inside) the cluster.

The URL's host is the Host header and the TLS SNI name; the connection goes to ``address``
(an LB IP, a node, a Service), the way ``curl --resolve`` pins a name to an address. The
server's certificate is verified against a CA the check names, or not at all (``insecure``).
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from netns_lab.probes.connect import split_hostport
from netns_lab.realize.netns import run_in


@dataclass
class HttpResult:
    result: str  # ok | refused | timeout | unreachable | tls-error | failed
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    served_by: str | None = None  # the pod netexec says answered
    client_ip: str | None = None  # the client address the pod saw (its TCP peer)
    detail: str = ""
    cert_subject: str = ""  # TLS: the presented certificate's subject CN
    cert_names: tuple[str, ...] = ()  # and its DNS subjectAltNames


def get(netns: str, url: str, address: str, port: int | None = None, ca_pem: str | None = None, insecure: bool = False,
        timeout: float = 3.0, headers: dict[str, str] | None = None) -> HttpResult:
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = port or parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def go() -> HttpResult:
        try:
            raw = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            return HttpResult(_errno_result(exc), detail=f"connect {address}:{port}: {exc.strerror or exc}")
        sock: socket.socket = raw
        out = HttpResult("failed")
        try:
            if tls:
                ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
                if insecure:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                try:
                    sock = ctx.wrap_socket(raw, server_hostname=host)
                except ssl.SSLError as exc:
                    return HttpResult("tls-error", detail=f"TLS with {host} at {address}:{port}: {exc.reason or exc}")
                cert = sock.getpeercert() if not insecure else None  # decoded only when verified
                if cert:
                    out.cert_subject = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
                    out.cert_names = tuple(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
            head = {"Host": host if parts.port is None else f"{host}:{parts.port}", "User-Agent": "netns-lab", "Connection": "close",
                    **(headers or {})}
            request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
            sock.sendall(request.encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            return HttpResult(_errno_result(exc), detail=f"GET {url}: {exc}")
        finally:
            sock.close()
        head_text, _, body = data.partition(b"\r\n\r\n")
        lines = head_text.decode("latin-1").split("\r\n")
        try:
            out.status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            out.detail = f"not an HTTP response: {lines[0][:60]!r}"
            return out
        out.headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        out.body = body.decode(errors="replace")
        out.result = "ok"
        out.served_by = out.headers.get("x-served-by")
        try:  # netexec's JSON answer names the pod and the client it saw (through a proxy: X-Real-IP,
            # as ingress-nginx sets it, else the first X-Forwarded-For, as HAProxy's option forwardfor adds it)
            doc = json.loads(out.body)
            out.served_by = doc.get("pod", out.served_by)
            got = {k.lower(): v for k, v in (doc.get("headers") or {}).items()}
            real = got.get("x-real-ip") or str(got.get("x-forwarded-for") or "").split(",")[0].strip()
            out.client_ip = real or split_hostport(str(doc.get("client", "")))[0] or None
        except (ValueError, AttributeError):
            pass
        return out

    return run_in(netns, go)


def _errno_result(exc: OSError) -> str:
    import errno

    if isinstance(exc, socket.timeout):
        return "timeout"
    return {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable",
            errno.ETIMEDOUT: "timeout"}.get(exc.errno or 0, "failed")
