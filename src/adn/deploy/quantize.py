"""INT8 export: onnxruntime static quantization of one sub-network's ONNX file, calibrated on the model's own
training images run through that sub-network (``adn export --quantize int8``).

Static quantization fixes each activation's scale from the ranges it takes on calibration images; those ranges
are the exported sub-network's own (its depth, its norms), so it is calibrated on the file it quantizes, not on
the switchable one (onnxruntime's calibrator does not collect ranges inside ``If`` branches). Weights are
quantized per output channel, which keeps small CNNs like ResNet-20 within a fraction of a point of float32.

Why uint8 activations (U8S8) and not int8 (S8S8): on x86-64 onnxruntime's fast int8 kernels (MLAS, VNNI) take
unsigned activations and signed weights. With int8 activations its QDQ fusion leaves every convolution that feeds
a residual ``Add`` in float between ``DequantizeLinear``/``QuantizeLinear`` nodes, the ``Add`` s in float and a
``Transpose`` pair around each (ResNet-50: 20 of 53 convolutions, 34 transposes; 0.7x the float32 latency), where
U8S8 runs all 53 as ``QLinearConv`` and the ``Add`` s as ``QLinearAdd`` in one NHWC chain (0.2-0.3x). On x86 CPUs
without VNNI the u8 x s8 products can saturate; ``reduce_range=True`` (7-bit weights) avoids that there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["quantize_int8"]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over batches of images."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
        self.name, self.batches = name, iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def _arrays(data: Iterable, limit: int) -> Iterator[np.ndarray]:
    seen = 0
    for batch in data:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        for image in images.astype(np.float32):  # one image per call: the exported graph's batch axis is dynamic
            if seen >= limit:
                return
            seen += 1
            yield image[None]


def quantize_int8(
    float_path: str | Path, int8_path: str | Path, images: Iterable, limit: int = 256, reduce_range: bool = False
) -> None:
    """Write the INT8 version of ONNX file ``float_path`` to ``int8_path``, calibrated on up to ``limit`` images
    from ``images`` (a data loader of ``(images, targets)`` or of image batches, normalised as for the model);
    ``reduce_range``: 7-bit weights, for x86 CPUs without VNNI (see the module's docstring)."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:  # pragma: no cover - optional dependency
        raise ValueError("INT8 export needs onnxruntime: pip install 'adn[export]'") from None
    import onnx

    float_path, int8_path = Path(float_path), Path(int8_path)
    name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
    prepared = int8_path.with_name(int8_path.stem + ".prep.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _Reader(name, _arrays(images, limit)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,  # U8S8: the x86 kernels' format (see the module's docstring)
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=reduce_range,
        )
    finally:
        prepared.unlink(missing_ok=True)
