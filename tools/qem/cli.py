"""`qis model compile MODEL.onnx [-o MODEL.qem]`: compile and print a summary."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import compile as compile_model
from . import summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="quantized ONNX model (QDQ or QOperator)")
    parser.add_argument("-o", "--output", help="output .qem file (default: next to the model)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".qem")
    data, qm = compile_model(args.model)  # CompileError reaches the `qis` error funnel
    out.write_bytes(data)
    s = summary(qm, len(data))
    print("compiled %s -> %s" % (args.model, out))
    print("  ops:    %s" % ", ".join("%s x%d" % kv for kv in s["ops"].items()))
    print("  params: %d weight bytes, %d bytes with int32 biases and requant params" % (s["weight_bytes"],
                                                                                      s["param_bytes"]))
    print("  MACs:   %d per inference" % s["macs"])
    print("  arena:  %d bytes (+ %d bytes int32 scratch)" % (s["arena_bytes"], s["scratch_bytes"]))
    print("  file:   %d bytes" % s["file_bytes"])
    return 0
