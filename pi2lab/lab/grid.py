"""A sweep's grid: the target, a few settings and a list of values per knob, expanded into
configurations (every combination).

A grid file (YAML or JSON)::

    target: sim          # sim: the decode simulator at phone scale (SIMULATED figures)
                         # engine: the offload engine measured on this machine
    repetitions: 2       # rows per configuration (sim: seeds 0.., engine: blocks of tokens)
    tokens: 16           # sim: simulated tokens per run; engine: decode tokens per repetition
    layers: 1            # engine, synthetic-7b model: layers of 7B shape
    knobs:
      device: oneplus12
      model: [turbosparse-mistral-7b, bamboo-7b]
      engine: [powerinfer2, llmflash]
      budget: [0.3, 0.5, 0.7]   # or "0.3,0.5,0.7"

Knobs are read by :mod:`pi2lab.bench.grid` (one value, a list, or comma-separated text); a
knob left out takes its default, and a default that is the engine's or the model's own is
resolved, so every configuration holds the value that runs. The ``engine`` target's knobs are
``pi2lab bench offload``'s (:data:`pi2lab.bench.offload.KNOBS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml

from pi2lab.bench import offload
from pi2lab.bench.grid import (
    Knob,
    choice,
    count,
    expand,
    nonempty,
    parse_grid,
    policy_name,
    share,
)
from pi2lab.engine.offload import ENGINE_POLICY
from pi2lab.errors import ConfigError
from pi2lab.pipeline.scheduler import OverlapMode, PipelineConfig
from pi2lab.plan.phones import resolve_profile
from pi2lab.plan.shapes import SHAPES, get_shape
from pi2lab.plan.simulator import SIM_ENGINES
from pi2lab.storage.layout import BITS

Target = Literal["engine", "sim"]
TARGETS: tuple[str, ...] = ("engine", "sim")
SOURCE = {"engine": "measured", "sim": "simulated"}
SIM_MODE = {"powerinfer2": "cluster", "llmflash": "matrix"}  # llama.cpp-mmap: no pipeline

SIM_KNOBS = (
    Knob(
        name="device",
        read=nonempty,
        default=("oneplus12",),
        help="hardware profile: oneplus12, oneplus-ace2, or a profile JSON file",
    ),
    Knob(
        name="model",
        read=nonempty,
        default=("turbosparse-mistral-7b",),
        help=f"model shape: {', '.join(SHAPES)}",
    ),
    Knob(name="engine", read=choice(*SIM_ENGINES), default=("powerinfer2",), help="engine"),
    Knob(
        name="budget",
        read=share(),
        default=(0.5,),
        help="neuron cache, share of every FFN's units on top of the resident part",
    ),
    Knob(name="policy", read=policy_name, help="cache policy (default: the engine's)"),
    Knob(name="hot_fraction", read=share(zero=True), default=(0.5,), help="segmented: hot share"),
    Knob(
        name="mode",
        read=choice(*typing.get_args(OverlapMode)),
        help="overlap mode (default: the engine's)",
    ),
    Knob(name="io_threads", read=count(), default=(1,), help="reader threads"),
    Knob(name="depth", read=count(), default=(PipelineConfig().depth,), help="units in flight"),
    Knob(name="cluster_size", read=count(), help="neurons per unit (default: the shape's)"),
    Knob(name="precision", read=choice(*BITS), help="bundle dtype (default: the shape's)"),
)
KNOBS: dict[str, tuple[Knob, ...]] = {"engine": offload.KNOBS, "sim": SIM_KNOBS}
SETTINGS = {  # name -> (read, default per target)
    "repetitions": (count(), {"engine": 2, "sim": 2}),
    "tokens": (count(), {"engine": 4, "sim": 16}),
    "layers": (count(), {"engine": 1, "sim": 1}),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grid:
    """A sweep's grid.

    Attributes:
      target: ``engine`` (measured here) or ``sim`` (simulated).
      knobs: The knobs the grid gave -> their values, in its order (the others take their
        defaults).
      repetitions: Rows per configuration.
      tokens: Simulated tokens per run (sim) or decode tokens per repetition (engine).
      layers: Layers of the synthetic 7B-shaped model (engine).
      where: The file (or what) the grid came from, for messages.
    """

    target: Target
    knobs: dict[str, tuple]
    repetitions: int = 2
    tokens: int = 16
    layers: int = 1
    where: str = "grid"

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "grid") -> Grid:
        """A grid from a grid file's mapping (see the module docstring).

        Raises:
          ConfigError: not a mapping, an unknown key, target or knob, or a bad value; the
            message starts with ``where``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with target, knobs and settings")
        unknown = set(data) - {"target", "knobs", *SETTINGS}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {sorted(unknown)[0]!r}: expected target, knobs, "
                f"{', '.join(SETTINGS)}"
            )
        target = data.get("target")
        if target not in TARGETS:
            raise ConfigError(f"{where}: target {target!r}: expected one of {', '.join(TARGETS)}")
        given = data.get("knobs") or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"{where}: knobs: expected a mapping of knob -> values")
        try:
            knobs = parse_grid(given, KNOBS[target], f"target {target}")
            settings = {}
            for key, (read, default) in SETTINGS.items():
                settings[key] = default[target] if key not in data else read(data[key])
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return cls(target=target, knobs=knobs, where=where, **settings)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Grid:
        """A grid file: YAML (``.yaml``, ``.yml``) or JSON (``.json``).

        Raises:
          ConfigError: the file is missing or unreadable, not YAML/JSON, or a bad grid.
        """
        path = Path(path)
        if path.suffix not in (".yaml", ".yml", ".json"):
            raise ConfigError(f"{path}: expected a grid file ending in .yaml, .yml or .json")
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the grid file ({e.strerror or e})") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: not {path.suffix[1:].upper()} ({e})") from None
        return cls.from_dict(data, str(path))

    def configurations(self) -> list[dict]:
        """Every combination of the knobs' values with the settings, defaults resolved
        (``target``, the knobs, ``tokens``, ``layers``, ``repetitions``), in the grid's order.

        Raises:
          ConfigError: a device, model shape or shape variant (cluster size, precision) that
            does not exist; checked here, before anything runs.
        """
        settings = {"tokens": self.tokens, "repetitions": self.repetitions}
        if self.target == "engine":
            settings["layers"] = self.layers
        resolve = offload.resolve_point if self.target == "engine" else _resolve_sim
        try:
            points = [resolve(p) for p in expand(self.knobs, KNOBS[self.target])]
        except ConfigError as e:
            raise ConfigError(f"{self.where}: {e}") from None
        return [{"target": self.target, **p, **settings} for p in points]


def _resolve_sim(point: dict) -> dict:
    p = dict(point)
    resolve_profile(p["device"])  # a ConfigError names the valid ones
    shape = get_shape(p["model"])
    pipelined = p["engine"] in SIM_MODE
    p["policy"] = (p["policy"] or ENGINE_POLICY[p["engine"]]) if pipelined else None
    p["mode"] = (p["mode"] or SIM_MODE[p["engine"]]) if pipelined else None
    p["cluster_size"] = p["cluster_size"] or shape.cluster_size
    p["precision"] = p["precision"] or shape.dtype
    sim_shape(p)  # the shape variant exists
    return p


def sim_shape(config: Mapping):
    """The model shape of a sim configuration: the built-in shape with its cluster size and
    bundle dtype."""
    return dataclasses.replace(
        get_shape(config["model"]),
        cluster_size=config["cluster_size"],
        dtype=config["precision"],
    )


def config_hash(config: Mapping) -> str:
    """12 hex digits identifying a configuration (its target, knobs and settings)."""
    text = json.dumps(dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


__all__ = ["KNOBS", "SOURCE", "TARGETS", "Grid", "config_hash", "sim_shape"]
