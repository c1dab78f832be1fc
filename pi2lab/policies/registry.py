"""Cache policies by name, in one naming scheme for the engine, the planner, the simulator, the
benches and the widgets.

A name is a kind, optionally with its parameter after a dash:

- ``segmented`` / ``segmented-F``: PowerInfer-2's segmented cache, a hot segment of share
  ``F`` (default the caller's ``hot_fraction``) holding the profile's hottest clusters, the rest
  LRU over single units (plain LRU when the hot segment would be empty);
- ``lru``, ``lfu``;
- ``window`` / ``window-K``: the neurons of the last ``K`` tokens (LLM in a Flash; default 5);
- ``static-hot``: what the cache holds from the start stays, the rest is streamed.

Belady's MIN needs the future trace and is built directly (:class:`~pi2lab.policies.Belady`).
"""

from __future__ import annotations

from pi2lab.errors import ConfigError
from pi2lab.policies.base import Policy
from pi2lab.policies.recency import LFU, LRU, Window
from pi2lab.policies.segmented import Segmented
from pi2lab.policies.static import StaticHot

POLICY_KINDS: tuple[str, ...] = ("segmented", "lru", "lfu", "window", "static-hot")


def parse_policy(name: str) -> tuple[str, float | None]:
    """``"window-5"`` -> ``("window", 5.0)``; ``"lru"`` -> ``("lru", None)``."""
    name = str(name)
    kind, _, arg = ("static-hot", "", "") if name == "static-hot" else name.partition("-")
    if kind not in POLICY_KINDS or (arg and kind not in ("segmented", "window")):
        raise ConfigError(
            f"cache policy {name!r}: expected one of {', '.join(POLICY_KINDS)} "
            "(segmented-F and window-K take a parameter)"
        )
    if not arg:
        return kind, None
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    ok = 0 <= value <= 1 if kind == "segmented" else value >= 1 and value == int(value)
    if not ok:
        want = "a hot fraction in [0, 1]" if kind == "segmented" else "a whole number of tokens"
        raise ConfigError(f"cache policy {name!r}: expected {want} after the dash")
    return kind, value


def make_policy(
    name: str, *, units: int, capacity: int, hot_fraction: float = 0.5, hot_region: float = 1.0
) -> Policy:
    """The policy ``name`` stands for, for an FFN of ``units`` units with ``capacity`` slots.

    Args:
      hot_fraction: ``segmented``'s hot share when the name gives none.
      hot_region: ``segmented``: the hot region over the hot segment's size (1: exactly the
        hottest clusters, filled at start).
    """
    kind, arg = parse_policy(name)
    if kind == "segmented":
        frac = hot_fraction if arg is None else arg
        hot = min(units, int(hot_region * frac * capacity))
        return Segmented(hot_units=hot, hot_fraction=frac) if hot else LRU()
    if kind == "window":
        return Window(k=5 if arg is None else int(arg))
    return {"lru": LRU, "lfu": LFU, "static-hot": StaticHot}[kind]()


def policy_label(name: str) -> str:
    """How figures and tables show a policy: ``LRU``, ``Window(5)``, ``Segmented (hot 50%)``."""
    kind, arg = parse_policy(name)
    if kind == "window":
        return f"Window({5 if arg is None else int(arg)})"
    if kind == "segmented":
        return "Segmented" if arg is None else f"Segmented (hot {arg:.0%})"
    return {"lru": "LRU", "lfu": "LFU", "static-hot": "StaticHot"}[kind]


__all__ = ["POLICY_KINDS", "make_policy", "parse_policy", "policy_label"]
