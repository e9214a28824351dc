"""``invoke gen-cert HOST...``: a throwaway CA and a certificate for trying Ingress TLS.

OpenSSL (the command) does the cryptography. The result is the four PEM files and a
``kubernetes.io/tls`` Secret manifest (base64 ``data``, as ``kubectl create secret tls``
writes it, plus ``ca.crt`` so checks can verify the server with ``ca: secret/NS/NAME``).
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile

import yaml


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def secret_name(hosts: list[str]) -> str:
    """The Secret's default name: the first host, as a DNS label-ish name (``*.a.b`` -> ``wildcard-a-b-tls``)."""
    return hosts[0].replace("*", "wildcard").replace(".", "-") + "-tls"


def generate(hosts: list[str], out_dir: str, name: str = "", namespace: str = "default", days: int = 3650) -> dict[str, str]:
    """Write ca.crt, ca.key, tls.crt, tls.key and secret.yaml into ``out_dir``; return their paths."""
    if not hosts:
        raise ValueError("name at least one host")
    os.makedirs(out_dir, exist_ok=True)
    p = {k: os.path.join(out_dir, k) for k in ("ca.crt", "ca.key", "tls.crt", "tls.key", "secret.yaml")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-keyout", p["ca.key"], "-out", p["ca.crt"],
             "-subj", "/O=netns-lab/CN=netns-lab test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = os.path.join(tmp, "tls.csr"), os.path.join(tmp, "ext.cnf")
        with open(ext, "w") as fh:
            fh.write("subjectAltName=" + ",".join(f"DNS:{h}" for h in hosts) + "\n"
                     "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p["tls.key"], "-out", csr, "-subj", f"/CN={hosts[0]}")
        _openssl("x509", "-req", "-in", csr, "-CA", p["ca.crt"], "-CAkey", p["ca.key"], "-CAcreateserial", "-days", str(days),
                 "-out", p["tls.crt"], "-extfile", ext)
    os.chmod(p["tls.key"], 0o600)
    os.chmod(p["ca.key"], 0o600)
    data = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        with open(p[key], "rb") as fh:
            data[key] = base64.b64encode(fh.read()).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": name or secret_name(hosts), "namespace": namespace},
              "data": data}
    with open(p["secret.yaml"], "w") as fh:
        yaml.safe_dump(secret, fh, sort_keys=False)
    return p
