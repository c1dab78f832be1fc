"""File helpers: atomic writes (a temporary file or directory beside the target, renamed into
place on success and removed on failure) and the directory where measured reads find their
files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def make_readable(path: Path, *, directory: bool = False) -> None:
    """Gives ``path`` the permissions a normally created file (or directory) would have:
    ``mkstemp``/``mkdtemp`` make them private."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if directory else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds the file is moved onto
    ``path``, when it fails it is removed, so ``path`` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, merge: bool = False) -> Iterator[Path]:
    """Yields a temporary directory beside ``path``; when the block succeeds it replaces
    ``path`` (with ``merge``, an existing ``path`` keeps its other files and gets the new ones
    one by one), when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            make_readable(p, directory=p.is_dir())
        if merge and path.exists():
            for file in tmp.iterdir():
                os.replace(file, path / file.name)
        else:
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_dir() -> Path:
    """Where benchmark layouts and storage test files are kept (``PI2LAB_BENCH_DIR``
    overrides); it must be on a filesystem that supports ``O_DIRECT`` for the figures to bypass
    the page cache."""
    return Path(os.environ.get("PI2LAB_BENCH_DIR", Path.home() / ".cache" / "pi2lab" / "bench"))
