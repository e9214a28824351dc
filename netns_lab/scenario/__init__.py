"""Scenario files: YAML in, validated immutable model out (see DESIGN.md for the format).

``load_scenario`` is imported on first use: the command line imports small modules of this
package (reading a file, checking arguments) without the YAML parser and the schemas."""

from typing import Any

__all__ = ["load_scenario"]


def __getattr__(name: str) -> Any:
    if name == "load_scenario":
        from netns_lab.scenario.loader import load_scenario

        return load_scenario
    raise AttributeError(f"module 'netns_lab.scenario' has no attribute {name!r}")
