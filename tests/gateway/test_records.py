"""Signed records between gateways (gateway.records, gateway.sites): what a peer may send,
and every way a stranger's bytes are refused before anything is decoded."""
from __future__ import annotations

import os
import stat

import pytest

from qis.gateway.records import (KIND_CONFIRMATION, KIND_OUTCOME, MAX_RECORD, Record, Refused, open_record,
                                 open_signed, record_from_row, seal_record, sign, sign_bytes)
from qis.gateway.sites import (PeerSite, SiteKeyError, add_to_sites_file, load_site, load_sites, provision_site,
                               site_kid)


@pytest.fixture
def site_a(tmp_path):
    return provision_site("clinic-a", tmp_path / "a.site")


@pytest.fixture
def site_b(tmp_path):
    return provision_site("clinic-b", tmp_path / "b.site")


@pytest.fixture
def peers(tmp_path, site_a, site_b):
    for s in (site_a, site_b):
        add_to_sites_file(tmp_path / "sites.json", s)
    return load_sites(tmp_path / "sites.json")


ROW = (7, "ecg-01", 42, 1764201600, 3, 1, 2, 201, bytes(range(16)), "full", None)


def test_a_record_carries_no_device_id_key_id_or_counter(site_a, peers):
    record = record_from_row(site_a, ROW)
    assert record == Record(KIND_OUTCOME, site_a.outcome_id("ecg-01", 42), "clinic-a", site_a.pseudonym("ecg-01"),
                            1, 3, 2, 201 >> 5, "full", bytes(range(16)), 1764201600 // 3600, None)
    data = seal_record(site_a, record)
    assert len(data) <= MAX_RECORD
    assert b"ecg-01" not in data and (42).to_bytes(4, "big") not in data
    assert open_record(data, peers) == record
    assert site_a.pseudonym("ecg-01") != site_a.pseudonym("ecg-02")
    confirmation = record_from_row(site_a, ROW[:-1] + (0,))
    assert (confirmation.kind, confirmation.label, confirmation.confirmed) == (KIND_CONFIRMATION, 2, 0)
    assert open_record(seal_record(site_a, confirmation), peers) == confirmation


def test_pseudonyms_and_outcome_ids_are_site_scoped(site_a, site_b):
    assert site_a.pseudonym("ecg-01") != site_b.pseudonym("ecg-01")
    assert site_a.outcome_id("ecg-01", 1) != site_b.outcome_id("ecg-01", 1)


def refused(data, peers) -> Refused:
    with pytest.raises(Refused) as info:
        open_record(data, peers)
    return info.value


def test_bad_signature_unknown_site_oversize_and_layout_are_refused(site_a, peers, tmp_path):
    data = bytearray(seal_record(site_a, record_from_row(site_a, ROW)))
    tampered = bytes(data[:-10]) + bytes(10)
    assert refused(tampered, peers).code == "signature"
    flipped = bytearray(data)
    flipped[40] ^= 1  # inside the payload: the signature no longer matches
    assert refused(bytes(flipped), peers).code == "signature"
    stranger = provision_site("stranger", tmp_path / "x.site")
    r = refused(seal_record(stranger, record_from_row(stranger, ROW)), peers)
    assert (r.code, r.reason) == ("unknown-site", f"unknown site key id {stranger.kid.hex()}")
    big = sign(site_a, [1, 1, b"x" * 600])
    assert refused(big, peers).code == "size"
    assert refused(b"\x84" + bytes(100), peers).code == "layout"
    assert refused(bytes(data) + b"\x00", peers).code == "layout"
    assert refused(b"", peers).code == "layout"


def test_a_record_signed_by_one_site_in_the_name_of_another_is_refused(site_a, site_b, peers):
    forged = record_from_row(site_a, ROW)
    data = sign(site_b, forged.payload())  # site b signs a record that says site a
    assert refused(data, peers).code == "site"


@pytest.mark.parametrize("index, value", [(1, 9), (2, b"short"), (4, b"p"), (5, 70000), (8, 8), (9, 2),
                                          (10, bytes(4)), (12, 3)])
def test_fields_out_of_range_are_refused_after_the_signature(site_a, peers, index, value):
    payload = record_from_row(site_a, ROW).payload()
    payload[index] = value
    r = refused(sign(site_a, payload), peers)
    assert r.code == "payload" and "clinic-a" in r.reason


def test_hostile_cbor_in_a_signed_payload_is_refused_by_the_strict_decoder(site_a, peers):
    # A member's key signing shared-value tags: the strict decoder refuses the first tag.
    with pytest.raises(Refused, match="tags are not allowed"):
        open_signed(sign_bytes(site_a, b"\xd8\x1c\x81\x00"), peers)
    with pytest.raises(Refused, match="is not \\[version 1, kind"):
        open_signed(sign_bytes(site_a, b"\x81\x02"), peers)
    assert open_signed(sign(site_a, [1, 1]), peers)[1] == [1, 1]


def test_site_key_files_are_private_and_checked(tmp_path, site_a):
    path = tmp_path / "a.site"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_site(path).kid == site_a.kid
    with pytest.raises(SiteKeyError, match="refusing to replace"):
        provision_site("clinic-a", path)
    os.chmod(path, 0o644)
    with pytest.raises(SiteKeyError, match="chmod 600"):
        load_site(path)
    with pytest.raises(SiteKeyError, match="site id"):
        provision_site("../x", tmp_path / "y.site")
    (tmp_path / "bad.json").write_text('{"sites": {"a": "00"}}')
    with pytest.raises(SiteKeyError, match="malformed"):
        load_sites(tmp_path / "bad.json")
    assert site_a.private.private_bytes_raw().hex() not in repr(site_a)


def test_site_kid_is_a_hash_of_the_public_key(site_a, peers):
    assert site_kid(site_a.public) == site_a.kid and isinstance(peers[site_a.kid], PeerSite)
