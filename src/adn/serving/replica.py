"""The model replica: one onnxruntime session over the switchable file, every depth, batched per depth.

Runs with onnxruntime and numpy only. Ray ships this module's code to the replica by value (see
:func:`adn.serving.app.build_app`), so the replica never imports ``adn`` -- whose ``__init__`` imports torch.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np
from ray import serve


def _all_skips(stages: int) -> list[str]:
    return ["".join("T" if (i >> (stages - 1 - b)) & 1 else "F" for b in range(stages)) for i in range(2**stages)]


class DepthModel:
    """``await handle.infer.remote(image, skip)`` -> ``{"logits", "infer_ms", "batch", "replica"}``.

    Requests wait up to ``max_wait_ms`` to be batched (Ray Serve's ``@serve.batch``); a batch is then split by
    skip config -- the ``skip`` input is one flag per stage for the whole batch -- and each depth's group runs
    as one session call, in the order of its first request.
    """

    def __init__(self, path: str, threads: int = 1, max_batch: int = 8, max_wait_ms: float = 2.0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: not a warning per unused initializer in every replica's log
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get("adn", "{}"))
        self.size, self.stages = int(self.meta["input_size"]), int(self.meta["num_stages"])
        rows = self.meta.get("subnets") or []
        self.skips = [str(r["skip"]) for r in rows] or _all_skips(self.stages)
        self.latency_ms = self._measure()
        self.pending = 0  # requests in this replica, waiting for a batch or running
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(max_wait_ms / 1e3)
        context = serve.get_replica_context() if _in_serve() else None
        self.replica = context.replica_id.unique_id if context is not None else str(os.getpid())

    def _run(self, images: np.ndarray, skip: str) -> np.ndarray:
        flags = np.array([c == "T" for c in skip], dtype=bool)
        return self.session.run(None, {"image": images, "skip": flags})[0]

    def _measure(self, repeats: int = 15) -> dict[str, float]:
        """Batch-1 latency of every sub-network on this replica (median of ``repeats``, after a warm-up)."""
        x = np.zeros((1, 3, self.size, self.size), np.float32)
        out = {}
        for skip in self.skips:
            self._run(x, skip)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                self._run(x, skip)
                times.append((time.perf_counter() - start) * 1e3)
            out[skip] = float(np.median(times))
        return out

    def describe(self) -> dict[str, Any]:
        """The file's metadata, this replica's latency table, and which heavy modules this process holds."""
        loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("torch", "adn", "torchvision")})
        return {"meta": self.meta, "latency_ms": self.latency_ms, "replica": self.replica, "pid": os.getpid(),
                "pending": self.pending, "loaded": loaded}  # fmt: skip

    async def infer(self, image: np.ndarray, skip: str) -> dict[str, Any]:
        self.pending += 1
        try:
            return await self._batch(image, skip)
        finally:
            self.pending -= 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _batch(self, images: list[np.ndarray], skips: list[str]) -> list[dict[str, Any]]:
        groups: dict[str, list[int]] = {}
        for i, skip in enumerate(skips):
            groups.setdefault(skip, []).append(i)
        answers: list[dict[str, Any]] = [{} for _ in skips]
        for skip, members in groups.items():
            batch = np.concatenate([images[i] for i in members])
            start = time.perf_counter()
            # in a thread, so that the event loop keeps admitting requests (onnxruntime releases the GIL)
            logits = await asyncio.to_thread(self._run, batch, skip)
            infer_ms = (time.perf_counter() - start) * 1e3
            for row, i in zip(logits, members, strict=True):
                answers[i] = {"logits": row, "infer_ms": infer_ms, "batch": len(members), "replica": self.replica}
        return answers


def _in_serve() -> bool:
    try:
        serve.get_replica_context()
    except Exception:  # noqa: BLE001 -- outside a replica Ray Serve raises; the class is still usable
        return False
    return True


__all__ = ["DepthModel"]
