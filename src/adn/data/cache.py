"""``--cache-dataset``: the ImageFolder file index (the directory scan that lists every image and its class),
saved on the first run and reused by later ones, as torchvision's classification reference caches its datasets.
On ILSVRC-2012 the scan of 1.28 M files takes minutes on network storage; the index file reads in a second.

The cache key is the folder's absolute path, the class-to-index map, the accepted extensions and each class
folder's modification time, so adding or removing an image (which touches its class folder) makes a new scan.
Files go to ``$ADN_CACHE_DIR`` (default ``~/.cache/adn/imagefolder``), written atomically (any process may
write; the content is the same).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

_CACHE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("adn_dataset_cache", default=None)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ADN_CACHE_DIR") or Path.home() / ".cache" / "adn" / "imagefolder")


@contextlib.contextmanager
def dataset_index_cache(cache_dir: str | os.PathLike | None) -> Iterator[None]:
    """While active, ImageFolder trees opened by :mod:`adn.data` use the index cache in ``cache_dir`` (None: off)."""
    token = _CACHE_DIR.set(Path(cache_dir) if cache_dir is not None else None)
    try:
        yield
    finally:
        _CACHE_DIR.reset(token)


def _key(directory: str, class_to_idx: dict[str, int], extensions) -> str:
    root = Path(directory).resolve()
    times = {c: os.stat(root / c).st_mtime_ns for c in sorted(class_to_idx)}
    text = json.dumps([str(root), class_to_idx, sorted(extensions or ()), times], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_index(
    directory: str, class_to_idx: dict[str, int], extensions, scan: Callable[[], list[tuple[str, int]]]
) -> list[tuple[str, int]]:
    """``scan()`` (the ImageFolder's ``make_dataset``), or its saved result when a cache is active and holds it."""
    cache_dir = _CACHE_DIR.get()
    if cache_dir is None:
        return scan()
    path = cache_dir / f"{_key(directory, class_to_idx, extensions)}.json"
    if path.is_file():
        with open(path) as f:
            return [(p, int(c)) for p, c in json.load(f)["samples"]]
    samples = scan()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"directory": str(Path(directory).resolve()), "samples": samples}, f)
    os.replace(tmp, path)
    return samples


__all__ = ["cached_index", "dataset_index_cache", "default_cache_dir"]
