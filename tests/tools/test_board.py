"""`qis board build`, `check` and `deploy`: every board builds, passes its port's stubs,
and deploys (or says why not); the systemd units pass `systemd-analyze verify`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qis.gateway.keys import provision
from qis.tools.board import check
from qis.tools.board.build import build
from qis.tools.errors import ToolError

ROOT = Path(__file__).resolve().parents[2]
QIS = [sys.executable, "-m", "qis.tools.cli.main"]


@pytest.mark.parametrize("board, arch", [("esp32", "xtensawin"), ("rpi", "python source"), ("unix", "host")])
def test_build_writes_a_deployable_folder_and_its_size_report(tmp_path, board, arch):
    proc = subprocess.run([*QIS, "board", "build", "--board", board, "--out", str(tmp_path / board), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    out = tmp_path / board
    assert report["arch"] == arch
    suffix = ".py" if board == "rpi" else ".mpy"
    assert report["modules"]["lib/edge/model" + suffix] == (out / "lib" / "edge" / ("model" + suffix)).stat().st_size
    assert (out / "main.py").is_file() and (out / "model.qem").is_file()
    assert report["flash"] > sum(report["modules"].values())  # the model file counts too
    heap = report["heap"]
    assert 50_000 < heap["resident"] <= heap["high"] < 160_000
    assert sum(n for _, n in heap["parts"]) == heap["high"]  # the parts add up to the most live
    assert [name.split(":")[0] for name, _ in heap["parts"]] == ["code"] * 3 + ["data"] * 3 + ["loop"]
    if board != "rpi":  # main.py only imports the board's compiled main
        assert (out / "main.py").read_text().splitlines()[-1] == f"import {board}_main"
        assert (out / "lib" / f"{board}_main.mpy").is_file()
    if board == "esp32":
        assert (out / "boot.py").is_file() and (out / "lib" / "pins.mpy").is_file()
        assert (out / "manifest.py").is_file() and (out / "src" / "edge" / "kernels.py").is_file()
        assert 'module("esp32_main.py"' in (out / "manifest.py").read_text() and (out / "src" / "esp32_main.py").is_file()
        assert "DATA = b'QEMF" in (out / "src" / "model_qem.py").read_text()
        assert (out / "lib" / "edge" / "kernels.mpy").read_bytes()[:2] == b"M\x06"
    if board == "rpi":
        assert {p.name for p in out.glob("*.service")} == {"qis-edge-device.service", "qis-edge-gateway.service"}


def test_check_passes_for_every_board(tmp_path):
    assert check.check(["esp32", "rpi", "unix"], tmp_path) == []


def test_check_fails_on_what_a_port_lacks(tmp_path, monkeypatch):
    """A board module using the esp32 module, checked as the unix board's code, fails."""
    board = tmp_path / "boards" / "unix"
    board.mkdir(parents=True)
    (board / "main.py").write_text("import esp32\nimport machine\nmachine.WDT(timeout=1000)\nesp32.raw_temperature()\n")
    monkeypatch.setattr(check.micropython, "board_dir", lambda name: board)
    work = tmp_path / "work"
    work.mkdir()
    (failure,) = check.check(["unix"], work)
    assert 'module named "esp32"' in failure
    (board / "main.py").write_text("import machine\nmachine.WDT(timeout=1000)\n")  # unix has no WDT
    (failure,) = check.check(["unix"], work)
    assert '"WDT"' in failure
    (board / "main.py").write_text("import machine\nmachine.idle()\n")  # unix has idle()
    assert check.check(["unix"], work) == []


def test_deploy_without_a_board_names_the_port_it_looked_for(tmp_path):
    provision("dev-a", tmp_path / "keys")
    proc = subprocess.run([*QIS, "board", "deploy", "--board", "esp32", "--port", str(tmp_path / "ttyUSB9"),
                           "--config", str(ROOT / "boards" / "esp32" / "config.example.json"),
                           "--keys", str(tmp_path / "keys"), "--id", "dev-a"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"no board at {tmp_path / 'ttyUSB9'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rpi_deploy_installs_config_and_units_that_systemd_verifies(tmp_path):
    provision("dev-a", tmp_path / "keys")
    key = (tmp_path / "keys" / "dev-a.key").read_text()
    root = tmp_path / "root"
    proc = subprocess.run([*QIS, "board", "deploy", "--board", "rpi", "--root", str(root), "--gateway",
                           "--config", str(ROOT / "boards" / "rpi" / "config.example.json"),
                           "--keys", str(tmp_path / "keys"), "--id", "dev-a"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    config = root / "etc" / "qis-edge" / "device.json"
    assert config.stat().st_mode & 0o777 == 0o600
    cfg = json.loads(config.read_text())
    assert cfg["device"] == "dev-a" and cfg["key"] in key and cfg["model"] == "/opt/qis-edge/model.qem"
    assert cfg["key"] not in proc.stdout + proc.stderr  # never printed
    assert (root / "opt" / "qis-edge" / "lib" / "edge" / "node.py").is_file()
    # systemd-analyze verify resolves units and their executables inside the root.
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    venv = root / "opt" / "qis-edge" / "venv" / "bin"
    venv.mkdir(parents=True)
    for exe in ("python", "qis"):
        (venv / exe).write_text("#!/bin/sh\n")
        (venv / exe).chmod(0o755)
    units = ["/etc/systemd/system/qis-edge-device.service", "/etc/systemd/system/qis-edge-gateway.service"]
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""
    unit = (root / units[0].lstrip("/")).read_text()
    for hardening in ("User=qis-edge", "ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=on-failure"):
        assert hardening in unit
    # The check can fail: a unit with an unknown key and a missing program does.
    (root / "etc" / "systemd" / "system" / "bad.service").write_text("[Service]\nExecStart=/nope\nBogus=1\n")
    bad = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/bad.service"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "Bogus" in bad.stderr


def test_the_model_from_bytes_is_the_model_from_its_file():
    """Frozen firmware hands the runtime the model as bytes (model_qem.DATA): same outputs."""
    from qis.edge.model import Model

    path = ROOT / "models" / "ecg_cnn" / "model.qem"
    a, b = Model(str(path)), Model(path.read_bytes())
    x = bytes(range(140))
    for m in (a, b):
        m.set_input_q(x)
        m.run()
    assert list(a.output("scores")) == list(b.output("scores"))
    assert list(a.output("embedding")) == list(b.output("embedding"))
    with pytest.raises(ToolError):
        build("unix", Path("/nonexistent/build"), "no-such-model")
