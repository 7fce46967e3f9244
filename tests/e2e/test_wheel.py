"""qis-edge installed from a wheel (not `pip install -e`) into a fresh virtual environment
runs the demo on all three links from outside the source tree: boards, models, the replay
and the clinic broker configuration travel inside the wheel, and nothing is found through
the checkout."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_built_wheel_runs_the_demo_outside_the_source_tree(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("qis_edge-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    # The dependencies (numpy, onnxruntime, cryptography, MicroPython ...) come from this
    # test's own environment, appended after the fresh one's site-packages: qis itself can
    # only come from the wheel (the editable install's finder is not loaded by a path line).
    fresh = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (fresh / "_qis_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MICROPYPATH", "QIS_DATA")}
    where = subprocess.run([str(python), "-c", "import qis.edge, qis.boards, qis.models; print(qis.edge.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(fresh)), where  # the wheel's copy, not the checkout
    # every link: the LoRa board radio and the shipped mosquitto configuration travel in the wheel too
    proc = subprocess.run([str(venv / "bin" / "qis"), "demo", "--links", "serial,lora,mqtt", "--devices", "1",
                           "--frames", "5", "--json", "--workdir", str(tmp_path / "work")], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["frames_sent"], summary["frames_acked"], summary["frames_stored"]) == (15, 15, 15)
    assert summary["rows_match"] is True
