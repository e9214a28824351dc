"""netns-lab: a Kubernetes cluster's network built for real in Linux network namespaces.

The package is layered (see DESIGN.md): ``model`` and ``scenario`` describe, ``controllers``
compute (IPAM, scheduling), ``realize`` is the only code that touches the kernel, ``services``
are in-lab processes, ``probes`` send real packets, ``lab`` ties the lifecycle together.
"""

from netns_lab.errors import CheckFailed, LabError, RealizeError, ScenarioError

__all__ = ["LabError", "ScenarioError", "RealizeError", "CheckFailed"]
__version__ = "0.1.0"
