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
