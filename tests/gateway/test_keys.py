"""Device key provisioning and the key registry: file modes, refusals, no leaked secrets."""
from __future__ import annotations

import json
import os
import stat

import pytest

from qis.gateway.keys import DeviceKey, KeyFileError, load_registry, provision, read_key_file, rotate


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_provision_writes_0600_in_0700(keys_dir):
    entry = provision("ecg-001", keys_dir)
    path = keys_dir / "ecg-001.key"
    assert mode(keys_dir) == 0o700 and mode(path) == 0o600
    raw = json.loads(path.read_text())
    assert raw == {"device": "ecg-001", "kid": entry.kid.hex(), "key": entry.key.hex(), "alg": 10}
    assert len(entry.kid) == 4 and len(entry.key) == 16
    assert load_registry(keys_dir) == {entry.kid: entry}


def test_provision_gives_distinct_keys(keys_dir):
    a, b = provision("a", keys_dir), provision("b", keys_dir)
    assert a.kid != b.kid and a.key != b.key


def test_provision_refuses_to_overwrite(keys_dir):
    first = provision("ecg-001", keys_dir)
    before = (keys_dir / "ecg-001.key").read_bytes()
    with pytest.raises(KeyFileError, match="device ecg-001 already has a key file .*ecg-001.key; refusing to replace it"):
        provision("ecg-001", keys_dir)
    assert (keys_dir / "ecg-001.key").read_bytes() == before
    assert load_registry(keys_dir)[first.kid].key == first.key


@pytest.mark.parametrize("bad", ["", ".hidden", "-x", "_x", "a/b", "../up", "a b", "x" * 65, "ä"])
def test_provision_refuses_bad_ids(keys_dir, bad):
    with pytest.raises(KeyFileError, match="must be 1-64 characters"):
        provision(bad, keys_dir)
    assert not list(keys_dir.glob("*.key"))


@pytest.mark.parametrize("perm", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_registry_refuses_readable_key_file(keys_dir, perm):
    provision("ecg-001", keys_dir)
    path = keys_dir / "ecg-001.key"
    os.chmod(path, perm)
    with pytest.raises(KeyFileError) as info:
        load_registry(keys_dir)
    assert str(info.value) == f"key file {path} is accessible by group/others (mode {perm:04o}); chmod 600 it"


def write_key(keys_dir, name: str, body: str):
    keys_dir.mkdir(mode=0o700, exist_ok=True)
    path = keys_dir / f"{name}.key"
    path.write_text(body)
    os.chmod(path, 0o600)
    return path


GOOD = {"device": "d1", "kid": "01020304", "key": "00" * 16, "alg": 10}


@pytest.mark.parametrize("body, reason", [
    ("not json", "is malformed (JSONDecodeError)"),
    ("[]", "is malformed (TypeError)"),
    (json.dumps({**GOOD, "kid": None}), "is malformed (TypeError)"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "key"}), "is malformed (KeyError)"),
    (json.dumps({**GOOD, "key": "zz" * 16}), "is malformed (ValueError)"),
    (json.dumps({**GOOD, "key": "00" * 15}), "need 4-byte kids, 16-byte keys and alg 10"),
    (json.dumps({**GOOD, "kid": "0102"}), "need 4-byte kids, 16-byte keys and alg 10"),
    (json.dumps({**GOOD, "alg": 11}), "need 4-byte kids, 16-byte keys and alg 10"),
    (json.dumps({**GOOD, "device": "d2"}), "holds device id 'd2'; it must be a valid id and the file's name"),
    (json.dumps({**GOOD, "device": 7}), "holds device id 7; it must be a valid id and the file's name"),
])
def test_registry_refuses_malformed_files(keys_dir, body, reason):
    path = write_key(keys_dir, "d1", body)
    with pytest.raises(KeyFileError) as info:
        load_registry(keys_dir)
    assert str(info.value).startswith(f"key file {path}") and str(info.value).endswith(reason)
    assert "00" * 16 not in str(info.value)


def test_registry_refuses_a_key_file_with_an_invalid_device_id(keys_dir):
    path = write_key(keys_dir, ".x", json.dumps({**GOOD, "device": ".x"}))
    with pytest.raises(KeyFileError, match="holds device id '.x'"):
        read_key_file(path)


def test_registry_refuses_a_shared_kid(keys_dir):
    a = provision("a", keys_dir)
    write_key(keys_dir, "b", json.dumps({**GOOD, "device": "b", "kid": a.kid.hex()}))
    with pytest.raises(KeyFileError, match=f"key id {a.kid.hex()} is used by both a and b"):
        load_registry(keys_dir)


def test_missing_directory_is_an_empty_registry(tmp_path):
    assert load_registry(tmp_path / "none") == {}


def test_key_not_in_repr(keys_dir):
    entry = provision("ecg-001", keys_dir)
    for text in (repr(entry), str(entry), repr(load_registry(keys_dir))):
        assert entry.key.hex() not in text and repr(entry.key) not in text
        assert "ecg-001" in text


def test_broken_symlink_is_a_clear_error(keys_dir):
    provision("ecg-001", keys_dir)
    (keys_dir / "ghost.key").symlink_to(keys_dir / "nowhere")
    with pytest.raises(KeyFileError, match=r"ghost.key does not exist \(or is a broken symbolic link\)"):
        load_registry(keys_dir)


def test_directory_named_like_a_key_is_a_clear_error(keys_dir):
    provision("ecg-001", keys_dir)
    (keys_dir / "folder.key").mkdir()
    with pytest.raises(KeyFileError, match="folder.key is not a regular file"):
        load_registry(keys_dir)


def test_symlink_to_a_private_key_file_is_followed(keys_dir, tmp_path):
    entry = provision("ecg-001", tmp_path / "elsewhere")
    keys_dir.mkdir(mode=0o700)
    (keys_dir / "ecg-001.key").symlink_to(tmp_path / "elsewhere" / "ecg-001.key")
    assert load_registry(keys_dir) == {entry.kid: entry}


@pytest.mark.parametrize("perm", [0o755, 0o750, 0o701])
def test_registry_refuses_an_open_key_directory(keys_dir, perm):
    provision("ecg-001", keys_dir)
    os.chmod(keys_dir, perm)
    with pytest.raises(KeyFileError, match=f"key directory {keys_dir} is accessible by group/others "
                                           f"\\(mode {perm:04o}\\); chmod 700 it"):
        load_registry(keys_dir)


def test_undecodable_key_file_is_malformed_not_a_crash(keys_dir):
    provision("ecg-001", keys_dir)
    bad = keys_dir / "bin.key"
    bad.write_bytes(b"\xff\xfe\x00")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="bin.key cannot be read"):
        load_registry(keys_dir)


def test_rotation_keeps_the_old_key_accepted_for_a_grace_period(keys_dir):
    first = provision("ecg-001", keys_dir)
    provision("ecg-002", keys_dir)
    second = rotate("ecg-001", keys_dir, grace_s=3600, now=1000.0)
    assert second.kid != first.kid and second.key != first.key
    path = keys_dir / "ecg-001.key"
    assert mode(path) == 0o600 and not (keys_dir / "ecg-001.key.tmp").exists()
    current, retired = read_key_file(path)
    assert current == second
    assert retired == [DeviceKey("ecg-001", first.kid, first.key, 4600.0)]
    registry = load_registry(keys_dir)
    assert registry[first.kid].accepts(4600.0) and not registry[first.kid].accepts(4600.5)
    assert registry[second.kid].accepts(1e12)
    current_only = load_registry(keys_dir, retired=False)
    assert second.kid in current_only and first.kid not in current_only and len(current_only) == 2
    # A later rotation drops retired keys whose time has passed.
    third = rotate("ecg-001", keys_dir, grace_s=60, now=5000.0)
    _, retired = read_key_file(path)
    assert [k.kid for k in retired] == [second.kid]
    assert third.kid not in (first.kid, second.kid)
    text = path.read_text()
    assert first.key.hex() not in text  # the expired key is gone from the file


def test_rotating_a_device_that_has_no_key_is_a_clear_error(keys_dir):
    provision("ecg-001", keys_dir)
    with pytest.raises(KeyFileError, match="ecg-404.key does not exist"):
        rotate("ecg-404", keys_dir)
