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


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed (.ci/run installs it)")
def test_vagrantfile_defines_the_spread_vms() -> None:
    env = {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", "NETNS_LAB_VMS": "3"}
    proc = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [f"lab{i}" for i in (1, 2, 3)] == [w.rstrip(":") for w in proc.stdout.split() if w.startswith("lab")]
    bad = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**env, "NETNS_LAB_VMS": "0"})
    assert bad.returncode != 0 and "NETNS_LAB_VMS must be 1 to 9 (got 0)" in bad.stdout + bad.stderr


# A stand-in for Vagrant's configuration objects that records every setting, so the test
# reads what the Vagrantfile asks of each VM (names, hostnames, private network addresses).
RUBY_RECORDER = r'''
require "json"
class Rec
  def initialize(path, log) @path, @log = path, log end
  def method_missing(name, *args, **kw, &blk)
    key = @path.empty? ? name.to_s : "#{@path}.#{name}"
    @log << [key, args.map(&:to_s), kw.transform_keys(&:to_s).transform_values(&:to_s)]
    blk.call(Rec.new("#{key}[#{args[0]}]", @log)) if blk
    Rec.new(key, @log)
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_version) log = []; yield Rec.new("", log); puts JSON.dump(log) end
end
load ARGV[0]
'''


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (vagrant brings it)")
@pytest.mark.parametrize("vms", [1, 2, 3])
def test_vagrantfile_spread_addresses_match_labs_spread_sh(vms: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    recorder = tmp_path / "rec.rb"
    recorder.write_text(RUBY_RECORDER)
    out = subprocess.run(["ruby", str(recorder), os.path.join(ROOT, "Vagrantfile")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NETNS_LAB_VMS": str(vms)})
    assert out.returncode == 0, out.stderr
    log = json.loads(out.stdout)
    defined = [args[0] for key, args, _kw in log if key == "vm.define"]
    networks = [(key, args, kw) for key, args, kw in log if key.endswith("vm.network")]
    if vms == 1:
        assert defined == [] and networks == [] and ["vm.hostname=", ["netns-lab"], {}] in log
        return
    assert defined == [f"lab{i}" for i in range(1, vms + 1)]
    # labs/spread.sh passes --spread 192.168.56.11,...: the same addresses, in the same order
    assert networks == [(f"vm.define[lab{i}].vm.network", ["private_network"], {"ip": f"192.168.56.{10 + i}"})
                        for i in range(1, vms + 1)]
    spread_sh = open(os.path.join(ROOT, "labs", "spread.sh")).read()
    assert "subnet=192.168.56" in spread_sh and 'seq -s, -f "$subnet.%g" 11 $((10 + n))' in spread_sh
