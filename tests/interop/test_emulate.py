"""`qis device emulate`'s flash preparation: the key never sits in a file others can read."""
from __future__ import annotations

import json
import os
import stat

from qis.gateway.keys import provision
from qis.tools.sim import emulate


def test_an_old_world_readable_config_is_replaced_not_rewritten(tmp_path):
    provision("dev-a", tmp_path / "keys")
    state = tmp_path / "flash"
    state.mkdir()
    old = state / "config.json"
    old.write_text("{}")
    os.chmod(old, 0o644)
    old_inode = old.stat().st_ino
    emulate.prepare_state(state, tmp_path / "keys" / "dev-a.key", "full", "rule")
    config = state / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.stat().st_ino != old_inode  # a new file: the key never went into the 0644 one
    assert json.loads(config.read_text())["device"] == "dev-a"
    assert not (state / "config.json.tmp").exists()


def _qis(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "qis.tools.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def test_link_options_are_checked_before_anything_runs(tmp_path):
    provision("dev-a", tmp_path / "keys")
    base = ["--id", "dev-a", "--keys", str(tmp_path / "keys"), "--frames", "1", "--state", str(tmp_path / "s")]
    r = _qis("device", "emulate", *base)
    assert r.returncode == 2 and "give exactly one link" in r.stderr
    r = _qis("device", "emulate", "--serial", "/dev/null", "--mqtt", "mqtt://h:1", *base)
    assert r.returncode == 2 and "give exactly one link" in r.stderr
    r = _qis("device", "emulate", "--lora", str(tmp_path / "m.sock"), "--profile", "full", *base)
    assert r.returncode == 2 and "does not fit a LoRa packet" in r.stderr
    r = _qis("device", "emulate", "--mqtt", "mqtts://127.0.0.1:8883", *base)
    assert r.returncode == 2 and "--mqtt-ca" in r.stderr
    r = _qis("gateway", "run", "--db", str(tmp_path / "gw.db"), "--keys", str(tmp_path / "keys"))
    assert r.returncode == 2 and "give at least one link" in r.stderr
    r = _qis("loopback", "--baud", "-5")
    assert r.returncode == 2 and "baud must be >= 0" in r.stderr
