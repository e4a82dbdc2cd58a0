"""Conformance engine: traces, comparison, reports."""
