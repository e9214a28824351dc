"""The Vagrant box: the Vagrantfile validates, and its provisioning script does what it says.

No box or hypervisor runs here, so the VM itself is not booted; the provisioning script is the
same labs/provision.sh as CI plus a few files, which this test writes under a temporary root.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (.ci/run installs it)")
def test_vagrantfile_validates() -> None:
    proc = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully" in proc.stdout


def test_vagrantfile_uses_the_shared_provisioning() -> None:
    text = open(os.path.join(ROOT, "Vagrantfile")).read()
    assert 'config.vm.box = "debian/bookworm64"' in text and 'path: "labs/vagrant.sh"' in text
    assert "bash labs/provision.sh" in open(os.path.join(ROOT, "labs", "vagrant.sh")).read()


@pytest.mark.root
def test_the_box_provisioning_script(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(["bash", os.path.join(ROOT, "labs", "vagrant.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "NETNS_LAB_ROOT": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "netns-lab box ready" in proc.stdout
    modules = (tmp_path / "etc" / "modules-load.d" / "netns-lab.conf").read_text().split()
    assert {"ip_vs", "ip_vs_rr", "dummy", "br_netfilter", "vxlan"} <= set(modules)
    invoke = tmp_path / "usr" / "local" / "bin" / "invoke"
    assert os.readlink(invoke) == os.path.join(ROOT, ".venv", "bin", "invoke")
    listed = subprocess.run([str(invoke), "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "run-scenario" in listed and "test-vm" in listed
