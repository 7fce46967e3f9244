"""`qis device emulate`'s flash preparation: the key never sits in a file others can read."""
from __future__ import annotations

import json
import os
import stat

import pytest

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


def _flash_with_waiting_frames(tmp_path, n):
    """A device flash provisioned with the first key, with n frames (sealed under that key)
    waiting in its outbox, as a device leaves them when no gateway acknowledged them."""
    from qis.edge import frame, store
    from qis.edge.ccm import CCM
    from qis.gateway.keys import read_key_file

    keys = tmp_path / "keys"
    first = provision("dev-a", keys)
    state = tmp_path / "flash"
    emulate.prepare_state(state, keys / "dev-a.key", "compact", "rule")
    counter, outbox = store.Counter(str(state)), store.Outbox(str(state))
    pt = frame.encode_outcome(frame.COMPACT, 1, 1, 1, 0, 200, bytes(4))
    for _ in range(n):
        c = counter.next()
        outbox.put(c, bytes(frame.seal(CCM(first.key), first.kid, c, pt, frame.UPLINK_IV)))
    assert read_key_file(keys / "dev-a.key")[0] == first
    return keys, state, first


def test_a_flash_with_another_key_is_refused_with_both_key_ids_and_the_ways_out(tmp_path):
    from qis.gateway.keys import rotate
    from qis.tools.errors import ToolError

    keys, state, first = _flash_with_waiting_frames(tmp_path, 3)
    second = rotate("dev-a", keys)
    with pytest.raises(ToolError) as info:
        emulate.prepare_state(state, keys / "dev-a.key", "compact", "rule")
    message = str(info.value)
    assert f"flash in {state} holds key id {first.kid.hex()}" in message
    assert f"gives key id {second.kid.hex()}" in message and "3 frames wait in its outbox" in message
    assert "--state NEW_FOLDER" in message and "--rekey" in message and "--drop-outbox" in message
    for secret in (first.key.hex(), second.key.hex()):
        assert secret not in message
    assert json.loads((state / "config.json").read_text())["kid"] == first.kid.hex()  # nothing changed


def test_rekey_keeps_the_counter_and_the_old_key_for_the_waiting_frames(tmp_path):
    from qis.gateway.keys import rotate

    keys, state, first = _flash_with_waiting_frames(tmp_path, 3)
    second = rotate("dev-a", keys)
    assert emulate.prepare_state(state, keys / "dev-a.key", "compact", "rule", rekey=True) == []
    config = json.loads((state / "config.json").read_text())
    assert config["kid"] == second.kid.hex()
    assert config["retired"] == [{"kid": first.kid.hex(), "key": first.key.hex()}]
    assert len(list((state / "outbox").glob("*.f"))) == 3 and list(state.glob("counter.[ab]"))
    # Once the old frames are delivered, the retired key leaves the flash.
    for f in (state / "outbox").glob("*.f"):
        f.unlink()
    emulate.prepare_state(state, keys / "dev-a.key", "compact", "rule")
    assert json.loads((state / "config.json").read_text())["retired"] == []


def test_rekey_with_drop_outbox_counts_the_waiting_frames_as_lost(tmp_path):
    from qis.gateway.keys import rotate

    keys, state, first = _flash_with_waiting_frames(tmp_path, 4)
    rotate("dev-a", keys)
    lost = emulate.prepare_state(state, keys / "dev-a.key", "compact", "rule", rekey=True, drop_outbox=True)
    assert lost == [0, 1, 2, 3]
    assert (state / "lost.log").read_text().split() == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (state / "lost").iterdir()) == [f"{c:08x}.f" for c in range(4)]
    assert list((state / "outbox").glob("*.f")) == []
    assert json.loads((state / "config.json").read_text())["retired"] == []


def test_a_flash_of_another_device_is_refused(tmp_path):
    from qis.tools.errors import ToolError

    keys, state, _ = _flash_with_waiting_frames(tmp_path, 0)
    provision("dev-b", keys)
    with pytest.raises(ToolError, match="belongs to device dev-a, not dev-b"):
        emulate.prepare_state(state, keys / "dev-b.key", "compact", "rule")
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
    r = _qis("device", "emulate", "--serial", "/dev/null", "--romfs", *base)
    assert r.returncode == 2 and "--romfs goes with --build" in r.stderr
    r = _qis("device", "emulate", "--serial", "/dev/null", "--build", str(tmp_path), "--romfs", *base)
    assert r.returncode == 1 and "build it with `qis board build`" in r.stderr  # a folder that is no build
    r = _qis("loopback", "--baud", "-5")
    assert r.returncode == 2 and "baud must be >= 0" in r.stderr
