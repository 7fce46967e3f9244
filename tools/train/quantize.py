"""Static int8 quantization of the reference models with onnxruntime's quantizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class BeatReader:
    """onnxruntime CalibrationDataReader over training beats, in batches."""

    def __init__(self, x: np.ndarray, batch: int = 50) -> None:
        self._batches = [x[i:i + batch] for i in range(0, len(x), batch)]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next {"x": batch}, or None when all beats were given."""
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {"x": self._batches[self._next - 1]}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0


def quantize_int8(float_path: Path, out_path: Path, calib_x: np.ndarray, qoperator: bool = False) -> None:
    """Static int8 quantization with onnxruntime: per-channel int8 weights, int8
    activations, MinMax calibration over `calib_x` (already shaped for the model).

    QDQ format (default): Softmax is left float, so both outputs leave an int8 tensor
    through DequantizeLinear (the ReLU before "embedding" folds into that tensor's
    quantization: zero point -128, range from 0). QOperator format (`qoperator`):
    QGemm nodes (com.microsoft), same calibration.
    """
    # Imported here: the quantization package is slow to import and only needed here.
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    reader = BeatReader(calib_x.astype(np.float32))
    quantize_static(
        str(float_path), str(out_path), reader,
        quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=["softmax"],
    )

