"""Memory budgets: one type and one rule for the engine, the planner, the simulator and the
widgets.

A budget is either **bytes** (everything the engine holds: resident tensors, KV cache, staging
rows and neuron cache) or a **share** of the FFN bytes held in the neuron cache on top of what
must stay resident. Which one is always said explicitly: ``MemoryBudget.bytes(2 << 30)``,
``MemoryBudget.share(0.5)``, or text ``"2GB"``, ``"512MiB"``, ``"50%"``, ``"0.5"``. A bare
number without a unit that is not a share written with a decimal point (``"1"``, ``"2048"``)
is refused as ambiguous rather than read as bytes.

The rule (:meth:`MemoryBudget.cache_units`): every FFN gets the same number of cache units, a
share of its units, or what the bytes left after the resident minimum hold, split evenly. An
MoE layer's units may then be shared among its experts by weight (:func:`split_units`, the
expert-aware cache of :class:`pi2lab.policies.ExpertAware`): the layer's total stays the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from pi2lab.errors import BudgetError, ConfigError

_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_TEXT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z%]*)\s*$")


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """A memory budget in bytes or as a share of the FFN bytes (exactly one is set).

    Attributes:
      total_bytes: Everything the engine holds, in bytes.
      ffn_share: The neuron cache as a share in [0, 1] of each FFN's units, on top of the
        resident minimum.
    """

    total_bytes: int | None = None
    ffn_share: float | None = None

    def __post_init__(self):
        if (self.total_bytes is None) == (self.ffn_share is None):
            raise ConfigError("MemoryBudget: give exactly one of total_bytes and ffn_share")
        if self.total_bytes is not None and self.total_bytes < 0:
            raise ConfigError(f"memory budget {self.total_bytes} bytes: expected >= 0")
        if self.ffn_share is not None and not 0 <= self.ffn_share <= 1:
            raise ConfigError(
                f"memory budget share {self.ffn_share}: expected a share of the FFN bytes in [0, 1]"
            )

    @classmethod
    def bytes(cls, n: int) -> MemoryBudget:
        return cls(total_bytes=int(n))

    @classmethod
    def share(cls, f: float) -> MemoryBudget:
        return cls(ffn_share=float(f))

    @classmethod
    def parse(cls, text: str) -> MemoryBudget:
        """``"0.5"`` or ``"50%"`` (a share of the FFN bytes), ``"2GB"``, ``"512MiB"``,
        ``"4096B"`` (bytes). Raises ConfigError on anything else, bare integers included."""
        m = _TEXT.match(str(text))
        unit = m.group(2).upper() if m else None
        if m and unit == "%":
            return cls.share(float(m.group(1)) / 100)
        if m and unit in _UNITS:
            return cls.bytes(int(float(m.group(1)) * _UNITS[unit]))
        if m and not unit and "." in m.group(1) and float(m.group(1)) <= 1:
            return cls.share(float(m.group(1)))
        raise ConfigError(
            f"memory budget {text!r}: expected a share of the FFN bytes (0.5 or 50%) or bytes "
            "with a unit (4096B, 512MiB, 2GB); a bare number is ambiguous"
        )

    @classmethod
    def of(cls, value) -> MemoryBudget:
        """A MemoryBudget from itself, text (:meth:`parse`) or a float share."""
        if isinstance(value, MemoryBudget):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, float):
            return cls.share(value)
        raise ConfigError(
            f"memory budget {value!r}: expected a MemoryBudget, text such as '2GB' or '50%', "
            "or a float share of the FFN bytes"
        )

    def __str__(self) -> str:
        if self.ffn_share is not None:
            return f"{self.ffn_share:.0%} of the FFN bytes"
        return f"{self.total_bytes:,} bytes"

    def total(self, minimum: int, cache_bytes: int) -> int:
        """Total bytes: the budget in bytes, or ``minimum`` plus the share of ``cache_bytes``
        (the bytes a cache of every unit would take)."""
        if self.total_bytes is not None:
            return self.total_bytes
        return minimum + int(self.ffn_share * cache_bytes)

    def cache_units(
        self, *, minimum: int, unit_bytes: int, units: int, ffns: int, parts: dict | None = None
    ) -> int:
        """Cache units per FFN: the share of ``units``, or the bytes left after ``minimum``
        over ``ffns`` FFNs of ``unit_bytes`` per unit (at most ``units``).

        Raises:
          BudgetError: a budget in bytes below ``minimum`` (the message gives it and its
            ``parts``, name -> bytes).
        """
        if self.ffn_share is not None:
            return int(self.ffn_share * units)
        self.check(minimum, parts)
        return min(units, (self.total_bytes - minimum) // unit_bytes // max(ffns, 1))

    def check(self, need: int, parts: dict | None = None) -> None:
        """Raises BudgetError when a budget in bytes cannot hold ``need`` bytes."""
        if self.total_bytes is not None and need > self.total_bytes:
            detail = ", ".join(f"{k} {v}" for k, v in (parts or {}).items())
            raise BudgetError(
                f"memory budget {self.total_bytes} bytes is below the minimum {need} bytes"
                + (f" ({detail})" if detail else "")
            )


def split_units(total: int, weights: Sequence[float], cap: int) -> list[int]:
    """``total`` cache units shared among FFNs in proportion to ``weights`` (e.g. an MoE layer's
    experts by how often they are routed to), none above ``cap`` units: what a capped FFN cannot
    hold goes to the others in proportion (water-filling), and the rounding remainder to the
    largest fractional shares. Zero weights get units only when the rest are full; all-zero
    weights split evenly. The result sums to ``min(total, cap * len(weights))``.

    Raises:
      ConfigError: no weights, a negative or non-finite weight, a negative ``total`` or ``cap``.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ConfigError(f"weights {list(weights)}: expected one or more finite weights >= 0")
    if total < 0 or cap < 0:
        raise ConfigError(f"split_units: total={total}, cap={cap}: expected both >= 0")
    n = w.size
    total = min(int(total), cap * n)
    share = np.zeros(n)
    rel = w / w.max() if w.max() > 0 else w  # a weight too small to scale counts as zero
    for part in (rel > 0, rel == 0):  # units go to zero weights only when the others are full
        left = total - share.sum()
        if left <= 0 or not part.any():
            continue
        pw = np.where(part, rel if rel[part].all() else 1.0, 0.0)
        # water-filling: the heaviest are capped first; the rest share what is left by weight
        order = np.argsort(-pw, kind="stable")[: int(part.sum())]
        for k in range(order.size):
            rest = order[k:]
            with np.errstate(over="ignore"):  # tiny weights: inf, capped just below
                scale = left / pw[rest].sum()
            if pw[rest[0]] * scale <= cap:
                share[rest] = pw[rest] * scale
                break
            share[rest[0]] = min(cap, left)
            left -= share[rest[0]]
    units = np.minimum(np.floor(share + 1e-9), cap).astype(np.int64)
    short = total - int(units.sum())
    if short > 0:  # the largest fractional parts (then weights) with room take one more each
        frac = np.where(units < cap, share - units, -np.inf)
        units[np.lexsort((-w, -frac))[:short]] += 1
    return units.tolist()


__all__ = ["MemoryBudget", "split_units"]
