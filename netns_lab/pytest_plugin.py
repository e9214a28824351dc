"""pytest plugin (entry point ``pytest11``): the ``lab`` fixture and the ``root`` marker.

Like munet's fixtures: a test names a scenario with ``@pytest.mark.scenario(path, **set)``
and gets a running :class:`~netns_lab.lab.Lab`. Labs are cached for the session by
(file, overrides), so many tests share one build, and all are torn down at the end.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from netns_lab.lab import Lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root (network namespaces); skipped with a reason otherwise")
    config.addinivalue_line("markers", "scenario(path, **overrides): the scenario file the `lab` fixture builds")
    config.addinivalue_line("markers", "ipvs: needs IP_VS and dummy interfaces (run with `invoke test-vm`)")
    config.addinivalue_line("markers", "sctp: needs SCTP in the kernel (run with `invoke test-vm`)")
    # A lab built in this process is this run's: a run killed before its teardown (CI stopped
    # half way) leaves records that would make the next run's `up` refuse the same names.
    Lab.temporary_by_default = True


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, veth and netlink changes (CI runs as root)")
    if item.get_closest_marker("ipvs"):
        from netns_lab.realize.ipvs import ipvs_available

        if not ipvs_available():
            pytest.skip("needs IP_VS and dummy interfaces, which this kernel lacks: `invoke test-vm` runs these "
                        "in a VM on Debian's stock kernel (CI does)")
    if item.get_closest_marker("sctp"):
        from netns_lab.realize.hostinfo import sctp_available

        if not sctp_available():
            pytest.skip("needs SCTP, which this kernel lacks: `invoke test-vm` runs these in a VM on Debian's stock kernel (CI does)")


@pytest.fixture(scope="session")
def lab_factory() -> Iterator[Callable[..., Lab]]:
    """``lab_factory(path, **overrides)``: a running lab, built once per session per key.

    Overrides use dotted scenario paths with ``__`` for dots: ``cluster__network="host-gw"``.
    """
    labs: dict[tuple[str, tuple[tuple[str, Any], ...]], Lab] = {}

    def make(path: str, **overrides: Any) -> Lab:
        key = (path, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in labs:
            sets = {k.replace("__", "."): v for k, v in overrides.items()}
            if "name" not in sets:
                # Variants of one file run side by side, so each needs its own lab name; and a
                # lab of the scenario's own name (a user's `invoke up`, a `run-scenario` in the
                # same session) is never touched: `up` refuses a name that is already up.
                stem = os.path.splitext(os.path.basename(path))[0][:30]
                sets["name"] = f"{stem}-{hashlib.sha1(repr(key).encode()).hexdigest()[:6]}"
            labs[key] = Lab.from_file(path, sets).up()
        return labs[key]

    yield make
    for lab in labs.values():
        lab.down()


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_factory: Callable[..., Lab]) -> Lab:
    """The lab named by the test's ``@pytest.mark.scenario(path, **overrides)`` marker."""
    marker = request.node.get_closest_marker("scenario")
    if marker is None:
        raise pytest.UsageError("the `lab` fixture needs @pytest.mark.scenario(path, ...)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    return lab_factory(*marker.args, **marker.kwargs)
