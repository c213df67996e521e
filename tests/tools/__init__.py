"""Tests that run real tools (helm, promtool, Prometheus). A package, so that its trainer run and
Prometheus server stop when this tier ends instead of competing with the later tiers for CPU."""
