"""The `qis` subcommands of the gateway: device provision, frame decode, outcomes export."""
from __future__ import annotations

import json
import re
import os
import stat
import subprocess
import sys
from pathlib import Path

from qis.edge import frame as spec
from qis.tools.cli.main import main
from qis.gateway.keys import load_registry
from qis.gateway.store import OutcomeStore
from qis.gateway.verify import open_outcome

QIS = Path(sys.executable).with_name("qis")


def qis(*argv: str) -> subprocess.CompletedProcess:
    """The installed `qis` entry point, as a user runs it."""
    return subprocess.run([str(QIS), *argv], capture_output=True, text=True, timeout=120)


def test_provision_command(tmp_path):
    keys = tmp_path / "keys"
    r = qis("device", "provision", "--id", "ecg-7", "--keys", str(keys))
    assert r.returncode == 0, r.stderr
    (entry,) = load_registry(keys).values()
    assert r.stdout == f"provisioned ecg-7: kid {entry.kid.hex()}, key file {keys / 'ecg-7.key'} (0600)\n"
    assert stat.S_IMODE(os.stat(keys / "ecg-7.key").st_mode) == 0o600
    assert entry.key.hex() not in r.stdout + r.stderr
    again = qis("device", "provision", "--id", "ecg-7", "--keys", str(keys))
    assert again.returncode == 1
    assert again.stderr.startswith("qis device provision: device ecg-7 already has a key file")
    bad = qis("device", "provision", "--id", "../x", "--keys", str(keys))
    assert bad.returncode == 1 and "device id '../x' must be 1-64 characters" in bad.stderr


def test_decode_full_frame(frames, keys_dir, devices):
    data = frames.full("dev-a", 77)
    r = qis("frame", "decode", data.hex(), "--keys", str(keys_dir))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == {"device": "dev-a", "kid": devices["dev-a"].kid.hex(), "counter": 77, "profile": "full",
                   "time": frames.TIME, "model": 3, "domain": 1, "label": 3, "confidence": 200,
                   "fingerprint": frames.FULL_FP.hex(), "topk": frames.TOPK, "ext": {}, "type": "outcome",
                   "size": 512}
    for d in devices.values():
        assert d.key.hex() not in r.stdout + r.stderr


def test_decode_compact_frame_with_whitespace_in_hex(frames, keys_dir, capsys):
    data = frames.compact("dev-b", 3)
    spaced = " ".join(data[i:i + 8].hex() for i in range(0, len(data), 8))
    assert main(["frame", "decode", spaced, "--keys", str(keys_dir)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["device"], got["counter"], got["profile"], got["fingerprint"]) == (
        "dev-b", 3, "compact", frames.COMPACT_FP.hex())


def test_decode_extension_with_bytes_prints_json(frames, keys_dir, capsys):
    fields = frames.full_fields()
    fields[9] = {1: b"\x01\x02", 2: {b"k": [b"\xff"]}}
    data = frames.sealed_fields("dev-a", 4, fields, spec.FULL)
    assert main(["frame", "decode", data.hex(), "--keys", str(keys_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["ext"] == {"1": "0102", "2": {"6b": ["ff"]}}


def test_decode_errors(frames, keys_dir, devices, capsys):
    good = frames.compact("dev-a", 1)
    wrong_key = frames.seal(os.urandom(16), devices["dev-a"].kid, 1, frames.compact_plaintext())
    cases = [
        ("zz" + good.hex()[2:], 2, "qis frame decode: not a hex string"),
        ("abc", 2, "qis frame decode: not a hex string"),
        (good.hex()[:-2], 1, "qis frame decode: rejected: size 50 bytes matches no profile"),
        (wrong_key.hex(), 1, "qis frame decode: rejected: authentication failed for device dev-a"),
        (frames.sealed_fields("dev-a", 2, [2] + frames.compact_fields()[1:]).hex(), 1,
         "qis frame decode: rejected: unsupported version 2"),
    ]
    for text, code, message in cases:
        assert main(["frame", "decode", text, "--keys", str(keys_dir)]) == code
        out = capsys.readouterr()
        assert out.out == "" and out.err.startswith(message), (text, out.err)
        for d in devices.values():
            assert d.key.hex() not in out.err


def test_decode_with_unsafe_key_directory(frames, keys_dir, devices):
    os.chmod(keys_dir / "dev-b.key", 0o644)
    r = qis("frame", "decode", frames.compact("dev-a", 1).hex(), "--keys", str(keys_dir))
    assert r.returncode == 1
    assert r.stderr == (f"qis frame decode: key file {keys_dir / 'dev-b.key'} is accessible by"
                        " group/others (mode 0644); chmod 600 it\n")
    assert devices["dev-b"].key.hex() not in r.stderr


def test_export(tmp_path, registry, frames):
    path = tmp_path / "gw.db"
    store = OutcomeStore(path)
    for data in (frames.compact("dev-b", 2), frames.full("dev-a", 1), frames.compact("dev-b", 1)):
        store.add(open_outcome(data, registry), data, "p")
    store.dead_letter("unsupported version 2", b"\x01", "p", "dev-a", 9, consumed=True)
    store.save_refusals([("p", "unknown-kid", "01020304", 7, 1.0, 2.0)], [], [])
    store.close()
    r = qis("outcomes", "export", "--db", str(path))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["device"], o["counter"]) for o in lines] == [("dev-a", 1), ("dev-b", 1), ("dev-b", 2)]
    assert {k: lines[0][k] for k in ("time", "label", "confidence", "fingerprint", "topk", "profile")} == {
        "time": frames.TIME, "label": 3, "confidence": 200, "fingerprint": frames.FULL_FP.hex(),
        "topk": frames.TOPK, "profile": "full"}
    assert lines[1]["fingerprint"] == frames.COMPACT_FP.hex()
    dead = qis("outcomes", "export", "--db", str(path), "--dead-letters")
    (row,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert (row["reason"], row["frame"], row["consumed"], row["device"]) == ("unsupported version 2", "01", 1, "dev-a")
    assert "refused before authentication" in dead.stderr
    assert re.search(r"p\s+.\s+unknown-kid\s+.\s+01020304\s+.\s+7\b", dead.stderr), dead.stderr
    assert "dead letters: 1 rows" in dead.stderr and "0 evicted" in dead.stderr


def test_export_missing_or_foreign_database(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["outcomes", "export", "--db", str(missing)]) == 1
    assert capsys.readouterr().err == f"qis outcomes export: no database at {missing}\n"
    assert not missing.exists()
    foreign = tmp_path / "other.db"
    foreign.write_bytes(b"this is not sqlite" * 100)
    assert main(["outcomes", "export", "--db", str(foreign)]) == 1
    assert capsys.readouterr().err.startswith(f"qis outcomes export: cannot use database {foreign}: ")


def test_gateway_run_with_a_broken_key_entry_says_which(tmp_path, keys_dir, devices, capsys):
    (keys_dir / "gone.key").symlink_to(tmp_path / "nowhere.key")
    assert main(["gateway", "run", "--serial", str(tmp_path / "tty"), "--db", str(tmp_path / "gw.db"),
                 "--keys", str(keys_dir)]) == 1
    err = capsys.readouterr().err
    assert err == f"qis gateway run: key file {keys_dir / 'gone.key'} does not exist (or is a broken symbolic link)\n"
