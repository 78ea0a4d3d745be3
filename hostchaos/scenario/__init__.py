"""Scenarios: faults in a planned order, with probes that judge the system's health.

A scenario file (YAML) names probes and steps; `hostchaos run FILE` checks it
whole (:mod:`.loader`), plays it (:mod:`.runner`) and reports what the probes
saw (:mod:`.report`). See docs/scenarios.md for the format.
"""
