"""Counts how often each engine entry point is traced, so tests can assert no retracing."""

import collections

TRACE_COUNTS: collections.Counter[str] = collections.Counter()


def traced(name: str) -> None:
    """Call at the top of a jitted function's body: it runs only while JAX traces it."""
    TRACE_COUNTS[name] += 1
