from edgetest import load, raises

fp = load("fingerprint")
errors = load("errors")

# Golden bits: the same on MicroPython and CPython (integer arithmetic only).
GOLDEN_COMPACT = "fcca438a"
GOLDEN_FULL = "fce2ca8a43fc8acf6061e08f4b91a7ca"
VEC = [12, -40, 7, 99, -3, 0, 55, -127, 18, 64, -64, 1, 2, -5, 100, 64]


def test_golden_fingerprints():
    compact = fp.SimHash(16, 4, 8, seed=1)
    full = fp.SimHash(16, 8, 16, seed=1)
    a = bytes(compact.fingerprint(VEC))
    b = bytes(full.fingerprint(VEC))
    assert len(a) == 4 and len(b) == 16
    assert a.hex() == GOLDEN_COMPACT, a.hex()
    assert b.hex() == GOLDEN_FULL, b.hex()


def test_similar_vectors_have_close_fingerprints():
    h = fp.SimHash(16, 8, 16, seed=3)
    base = bytes(h.fingerprint(VEC))
    near = bytes(h.fingerprint([v + (1 if i % 2 else -1) for i, v in enumerate(VEC)]))
    far = bytes(h.fingerprint([-v for v in VEC]))
    assert fp.hamming(base, near) < 16
    assert fp.hamming(base, far) > 96  # the opposite vector flips (almost) every sign


def test_buckets_are_the_first_8_bits_of_each_table():
    h = fp.SimHash(16, 4, 8, seed=1)
    bits = bytes(h.fingerprint(VEC))
    assert fp.buckets(bits, 4, 8) == list(bits)
    full = bytes(fp.SimHash(16, 8, 16, seed=1).fingerprint(VEC))
    assert fp.buckets(full, 8, 16) == [full[2 * t] for t in range(8)]
    raises(errors.ConfigError, fp.buckets, full, 4, 16)


def test_a_compact_fingerprint_is_a_prefix_of_the_full_one_table_by_table():
    # The same hyperplanes table by table: compact and full frames of one spec land at
    # the same addresses (tables 0..3).
    s = fp.spec(1)
    from_profile = load("frame")
    compact = bytes(s.simhash(from_profile.COMPACT).fingerprint(VEC))
    full = bytes(s.simhash(from_profile.FULL).fingerprint(VEC))
    assert fp.buckets(compact, 4, 8) == fp.buckets(full, 8, 16)[:4]


def test_specs_name_their_domain_and_unknown_domains_are_refused():
    s = fp.spec(1)
    assert (s.domain, s.name, s.version, s.dim) == (1, "ecg-beat", 1, 16)
    err = raises(errors.ConfigError, fp.spec, 999)
    assert "no fingerprint spec for domain 999" in str(err)


def test_seed_changes_the_planes():
    a = bytes(fp.SimHash(16, 4, 8, seed=1).fingerprint(VEC))
    b = bytes(fp.SimHash(16, 4, 8, seed=2).fingerprint(VEC))
    assert a != b


def test_bad_shapes_are_refused():
    raises(errors.ConfigError, fp.SimHash, 16, 3, 5)
    h = fp.SimHash(16, 4, 8)
    err = raises(errors.ConfigError, h.fingerprint, [1, 2, 3])
    assert "16" in str(err)
