"""Scenario files: YAML in, validated immutable model out (see DESIGN.md for the format)."""

from netns_lab.scenario.loader import load_scenario

__all__ = ["load_scenario"]
