"""Knob grids: a list of values per knob, expanded into every combination, as llama.cpp's
``llama-bench`` expands list-valued flags (``--cluster-size 8,16,32 --budget 0.4,0.5``).

A :class:`Knob` names one setting and how its values are read: from text (a CLI flag, one
item of a comma-separated list) or from a number or string of a grid file. The benches
(:mod:`pi2lab.bench`) and the sweeps (:mod:`pi2lab.lab`) declare their knobs with the
constructors below and share :func:`parse_values` and :func:`expand`, so a value means the same
thing, and is refused with the same message, wherever it is given.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

from pi2lab.errors import ConfigError
from pi2lab.policies.registry import parse_policy

Value = str | int | float | bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Knob:
    """One setting a grid can vary.

    Attributes:
      name: The knob's name: the grid file's key, the row's column; the CLI flag is
        ``--name`` with dashes for underscores.
      read: One value from text or a number -> the value, or ConfigError saying what was
        expected (the message names no knob: :func:`parse_values` adds it).
      default: The values when a grid leaves the knob out (``(None,)``: the engine's or the
        model's own, resolved by whoever runs the configuration).
      help: What the knob sets, for ``--help`` and error messages.
    """

    name: str
    read: Callable[[Value], Value]
    default: tuple[Value | None, ...] = (None,)
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _number(value: Value, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"expected {what}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected {what}") from None
    if not math.isfinite(x):
        raise ConfigError(f"expected {what}")
    return x


def share(*, zero: bool = False) -> Callable[[Value], float]:
    """A share in (0, 1] (``zero``: [0, 1])."""
    what = f"a share in {'[0' if zero else '(0'}, 1] (0.5, not 50%)"

    def read(value: Value) -> float:
        x = _number(value, what)
        if not (0 <= x <= 1 if zero else 0 < x <= 1):
            raise ConfigError(f"expected {what}")
        return x

    return read


def count(lo: int = 1) -> Callable[[Value], int]:
    """A whole number >= ``lo``."""
    what = f"a whole number >= {lo}"

    def read(value: Value) -> int:
        x = _number(value, what)
        if x != int(x) or x < lo or (isinstance(value, str) and not value.strip().isdigit()):
            raise ConfigError(f"expected {what}")
        return int(x)

    return read


def choice(*options: str) -> Callable[[Value], str]:
    """One of ``options``."""

    def read(value: Value) -> str:
        if not isinstance(value, str) or value.strip() not in options:
            raise ConfigError(f"expected one of {', '.join(options)}")
        return value.strip()

    return read


def policy_name(value: Value) -> str:
    """A cache policy name of :mod:`pi2lab.policies.registry` (``lru``, ``window-5``, ...)."""
    parse_policy(str(value).strip())  # its message names the value and the valid names
    return str(value).strip()


def nonempty(value: Value) -> str:
    """A non-empty name (checked by whoever resolves it: a shape, a profile)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("expected a name")
    return value.strip()


def parse_values(knob: Knob, values: Value | Sequence[Value]) -> tuple[Value, ...]:
    """The values of ``knob`` from a comma-separated string (``"0.4,0.5"``), a sequence or one
    value, in order, duplicates dropped.

    Raises:
      ConfigError: an empty list, an empty item (``"0.4,,0.5"``) or a value the knob refuses;
        the message names the knob and the value.
    """
    if isinstance(values, str):
        items: Sequence[Value] = values.split(",")
    elif isinstance(values, Sequence):
        items = values
    else:
        items = [values]
    if not items:
        raise ConfigError(f"{knob.name}: empty list: expected at least one value")
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            raise ConfigError(
                f"{knob.name}: empty item in {values!r}: expected comma-separated values"
            )
        try:
            out.append(knob.read(item))
        except ConfigError as e:
            raise ConfigError(f"{knob.name}={item!r}: {e}") from None
    return tuple(dict.fromkeys(out))


def parse_grid(
    given: Mapping[str, Value | Sequence[Value]], knobs: Sequence[Knob], where: str
) -> dict[str, tuple[Value, ...]]:
    """The knobs ``given``, in their order, with their values parsed.

    Raises:
      ConfigError: a knob ``where`` does not have (the message lists those it has), or a bad
        value (:func:`parse_values`).
    """
    by_name = {k.name: k for k in knobs}
    unknown = [k for k in given if k not in by_name]
    if unknown:
        have = ", ".join(by_name) or "(none)"
        raise ConfigError(f"{where}: unknown knob {unknown[0]!r}: expected one of {have}")
    return {name: parse_values(by_name[name], values) for name, values in given.items()}


def expand(
    grid: Mapping[str, Sequence[Value]], knobs: Sequence[Knob] = ()
) -> list[dict[str, Value]]:
    """Every combination of ``grid``'s values, with every knob of ``knobs`` that ``grid``
    leaves out at its defaults; knobs in the order of ``knobs`` (then ``grid``'s others), the
    first varying slowest."""
    full = {k.name: grid.get(k.name, k.default) for k in knobs}
    full |= {k: v for k, v in grid.items() if k not in full}
    names = list(full)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*full.values())]


def labels(points: Sequence[Mapping[str, Value]], grid: Mapping) -> list[str]:
    """A name per point (``budget=0.4 policy=lru``): its values of the knobs ``grid`` gives
    and of any other knob that varies among ``points``, for section names."""
    names = [n for n in points[0] if n in grid or len({str(p[n]) for p in points}) > 1]
    text = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
    return [" ".join(f"{n}={text(p[n])}" for n in names) for p in points]


__all__ = [
    "Knob",
    "choice",
    "count",
    "expand",
    "labels",
    "nonempty",
    "parse_grid",
    "parse_values",
    "policy_name",
    "share",
]
