"""Sweeps on Dask: a grid's configurations submitted to a cluster, their rows streamed into
one tidy table as they finish.

Where they run: a :class:`distributed.LocalCluster` of worker processes (by default), or an
existing scheduler (``scheduler="tcp://host:port"``). Measured configurations (``engine``) must
not share cores, so the local cluster has ``cores // threads_per_run`` workers, one task at a
time each, every worker pinned to its own ``threads_per_run`` cores (CPU affinity, set before
the worker imports JAX, so XLA sizes its pool to them) with BLAS/OpenMP pools of that size;
simulated ones (``sim``) run one per core.

The table (:func:`run_sweep`): one row per configuration and repetition (see
:mod:`pi2lab.lab.runs` for the columns), written after every finished configuration to a
temporary file renamed onto ``out`` (parquet or CSV), so an interrupted sweep leaves the rows
it finished and nothing half-written. Run again, it skips the configurations whose rows are
there for the same commit (a configuration's hash and the commit are the key) without an
error; failed ones run again.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
from distributed import Client, LocalCluster, WorkerPlugin, as_completed
from tqdm.auto import tqdm

from pi2lab.bench.rows import provenance
from pi2lab.errors import ConfigError
from pi2lab.fileio import atomic_file
from pi2lab.lab.grid import Grid, config_hash
from pi2lab.lab.runs import FIGURES, error_row, run_configuration

FORMATS = (".parquet", ".csv")
LEADING = ("source", "config_hash", "commit")  # then the knobs, then:
TRAILING = ("repetition", *FIGURES, "error")  # then settings, versions and the timeline


# -- the table ---------------------------------------------------------------------------------
def _check_out(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"{out}: expected a table ending in {' or '.join(FORMATS)}")
    return out


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """A sweep's table (parquet or CSV) as written by :func:`run_sweep`.

    Raises:
      ConfigError: a suffix other than .parquet or .csv, or a file that does not read as one.
    """
    path = _check_out(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read it as a sweep table ({e})") from None
    missing = [c for c in (*LEADING, "error") if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: not a sweep table (no {', '.join(missing)} column)")
    return table


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Writes ``table`` to a temporary file beside ``path``, then renames it onto ``path``."""
    path = _check_out(path)
    with atomic_file(path) as tmp:
        if path.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def tidy(rows: list[dict], knobs: list[str], order: dict[str, int] | None = None) -> pd.DataFrame:
    """Rows as a DataFrame, columns in a fixed order: the key, the knobs, the repetition and
    figures, the rest; rows in ``order`` (config hash -> rank; others first, as they were)."""
    if order:
        rep = lambda r: r["repetition"] if isinstance(r.get("repetition"), numbers.Integral) else -1
        rows = sorted(rows, key=lambda r: (order.get(r["config_hash"], -1), rep(r)))
    table = pd.DataFrame(rows)
    first = [c for c in (*LEADING, *knobs, *TRAILING) if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    if "repetition" in table:
        table["repetition"] = table["repetition"].astype("Int64")
    return table


def finished(table: pd.DataFrame | None, commit: str) -> set[str]:
    """Hashes of the configurations ``table`` holds rows of, at ``commit``, without an error."""
    if table is None or table.empty:
        return set()
    ok = (table["commit"] == commit) & table["error"].isna()
    return set(table.loc[ok, "config_hash"])


# -- where the configurations run ----------------------------------------------------------------
class PinCores(WorkerPlugin):
    """Pins worker ``i`` of a local cluster (named 0, 1, ...) to cores ``[i*t, (i+1)*t)`` of
    those this process may use: every thread the worker has, and so every thread it starts
    later (JAX's pools among them)."""

    def __init__(self, threads: int):
        self.threads = threads

    def setup(self, worker) -> None:
        cores = sorted(os.sched_getaffinity(0))
        i = int(worker.name) if str(worker.name).isdigit() else 0
        mine = set(cores[i * self.threads : (i + 1) * self.threads]) or set(cores)
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), mine)


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def local_cluster(target: str, workers: int | None = None, threads_per_run: int = 2):
    """A :class:`distributed.LocalCluster` of worker processes sized for ``target``: measured
    runs one per ``threads_per_run`` cores (each worker pinned to its cores, its thread pools
    that size), simulated runs one per core; ``workers`` overrides the count."""
    measured = target == "engine"
    if threads_per_run < 1 or (workers is not None and workers < 1):
        raise ConfigError(
            f"workers={workers}, threads_per_run={threads_per_run}: expected each >= 1"
        )
    n = workers or (max(1, cores() // threads_per_run) if measured else cores())
    threads = str(threads_per_run if measured else 1)
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,  # one configuration at a time per worker
        processes=True,
        dashboard_address=":0",  # any free port: two clusters do not compete for one
        env={k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    )
    if measured and hasattr(os, "sched_setaffinity"):
        with Client(cluster) as client:
            client.register_plugin(PinCores(threads_per_run))
    return cluster


@contextlib.contextmanager
def connect(
    target: str,
    scheduler: str | None,
    workers: int | None,
    threads_per_run: int,
    timeout: float,
) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster sized for ``target`` (closed after)."""
    if scheduler is None:
        with local_cluster(target, workers, threads_per_run) as cluster, Client(cluster) as c:
            yield c
        return
    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise ConfigError(
            f"scheduler {scheduler!r}: cannot connect ({type(e).__name__}: {e}); expected the "
            "address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786"
        ) from None
    with client:
        yield client


# -- the sweep -----------------------------------------------------------------------------------
def run_sweep(
    grid: Grid,
    out: str | os.PathLike | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_run: int = 2,
    progress: bool = True,
    on_rows: Callable[[pd.DataFrame, list[dict]], None] | None = None,
    connect_timeout: float = 10.0,
) -> pd.DataFrame:
    """Runs ``grid``'s configurations on Dask and returns the table (with ``out``'s earlier
    rows); ``on_rows(table, rows)`` is called as each configuration's rows arrive.

    Args:
      out: A ``.parquet`` or ``.csv`` file written after every configuration (None: none).
      scheduler: A Dask scheduler's address; None starts a local cluster
        (:func:`local_cluster`) for this sweep.
      workers, threads_per_run: The local cluster's size (see :func:`local_cluster`).
      progress: A progress bar (tqdm) on stderr.
      connect_timeout: Seconds to wait for ``scheduler``.

    Raises:
      ConfigError: a bad ``out`` suffix, an unreadable earlier table, a bad grid
        configuration, or a scheduler that cannot be reached.
    """
    out = None if out is None else _check_out(out)
    configs = grid.configurations()
    knobs = [k for k in configs[0] if k not in ("target", "tokens", "layers", "repetitions")]
    order = {config_hash(c): i for i, c in enumerate(configs)}
    commit = provenance()["commit"]
    table = load_table(out) if out is not None and out.exists() else None
    done = finished(table, commit)
    todo = [c for c in configs if config_hash(c) not in done]
    rows = [] if table is None else table.to_dict("records")
    if not todo:  # every configuration is in ``out`` already
        return tidy(rows, knobs, order)
    with connect(grid.target, scheduler, workers, threads_per_run, connect_timeout) as client:
        futures = {
            client.submit(run_configuration, c, key=f"pi2lab-sweep-{config_hash(c)}", pure=False): c
            for c in todo
        }
        bar = tqdm(
            total=len(futures), desc=f"sweep ({grid.target})", unit="config", disable=not progress
        )
        for future in as_completed(futures):
            config = futures[future]
            try:
                new = future.result()
            except Exception as e:  # the worker died or the task could not run
                new = [error_row(config, e)]
            key = config_hash(config)
            rows = [r for r in rows if (r["config_hash"], r["commit"]) != (key, new[0]["commit"])]
            rows += new
            table = tidy(rows, knobs, order)
            if out is not None:
                write_table(table, out)
            if on_rows is not None:
                on_rows(table, new)
            bar.update()
        bar.close()
    return table


__all__ = ["load_table", "local_cluster", "run_sweep", "tidy", "write_table"]
