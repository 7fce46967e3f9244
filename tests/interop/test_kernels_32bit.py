"""The edge kernels on a 32-bit machine word, proved two ways.

1. Their own source (edge/kernels.py, edge/float32.py) runs here with 32-bit machine-word
   semantics: every viper int is a Word32 that raises on any intermediate outside int32,
   every pointer load yields one, every store is range-checked; the compiled conformance
   models, the reference models and worst-case inputs run through Model with these kernels.
2. mpy-cross compiles every edge module, viper included, for xtensawin (ESP32) and armv7m
   (Cortex-M); its x64 output loads and runs in the unix port, so the .mpy format is the one
   the MicroPython binary of the tests reads.
"""
from __future__ import annotations

import builtins
import subprocess
from fractions import Fraction
import sys
import types
from array import array
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

import qis.edge
import qis.edge.model
from qis.tools.qem import CompileError, requant_params
from qis.tools.qem import compile as compile_model
from qis.tools.qem.check import compare, ort_reference, quantize_like_ort
from qis.tools.qem.runtime import run_cpython
from qis.tools.sim import micropython
from qis.tools.sim.micropython import models_dir

EDGE = Path(qis.edge.__file__).resolve().parent
LO, HI = -(1 << 31), (1 << 31) - 1


class Overflow32(ArithmeticError):
    pass


class Word32:
    """A signed 32-bit machine word: every result must fit, as on an ESP32's viper code."""

    __slots__ = ("v",)

    def __init__(self, v):
        v = v.v if isinstance(v, Word32) else builtins.int(v)
        if not LO <= v <= HI:
            raise Overflow32("intermediate %d outside int32" % v)
        self.v = v

    def _op(fn):  # noqa: N805 - a decorator of this class body
        def method(self, other):
            return Word32(fn(self.v, other.v if isinstance(other, Word32) else other))

        return method

    __add__ = _op(lambda a, b: a + b)
    __radd__ = _op(lambda a, b: b + a)
    __sub__ = _op(lambda a, b: a - b)
    __rsub__ = _op(lambda a, b: b - a)
    __mul__ = _op(lambda a, b: a * b)
    __rmul__ = _op(lambda a, b: b * a)
    __floordiv__ = _op(lambda a, b: a // b)
    __rfloordiv__ = _op(lambda a, b: b // a)
    __mod__ = _op(lambda a, b: a % b)
    __rmod__ = _op(lambda a, b: b % a)
    __and__ = _op(lambda a, b: a & b)
    __rand__ = _op(lambda a, b: b & a)
    __or__ = _op(lambda a, b: a | b)
    __ror__ = _op(lambda a, b: b | a)
    __xor__ = _op(lambda a, b: a ^ b)
    __rshift__ = _op(lambda a, b: a >> b)
    __rrshift__ = _op(lambda a, b: b >> a)

    def __lshift__(self, other):
        n = other.v if isinstance(other, Word32) else other
        if not 0 <= n < 32:
            raise Overflow32("shift by %d on a 32-bit word" % n)
        return Word32(self.v << n)

    def __rlshift__(self, other):
        if not 0 <= self.v < 32:
            raise Overflow32("shift by %d on a 32-bit word" % self.v)
        return Word32(other << self.v)

    _cmp = lambda fn: lambda self, other: fn(self.v, other.v if isinstance(other, Word32) else other)  # noqa: E731
    __eq__ = _cmp(lambda a, b: a == b)
    __ne__ = _cmp(lambda a, b: a != b)
    __lt__ = _cmp(lambda a, b: a < b)
    __le__ = _cmp(lambda a, b: a <= b)
    __gt__ = _cmp(lambda a, b: a > b)
    __ge__ = _cmp(lambda a, b: a >= b)
    __hash__ = None

    def __neg__(self):
        return Word32(-self.v)

    def __bool__(self):
        return self.v != 0

    def __index__(self):
        return self.v

    __int__ = __index__


class Ptr:
    """A viper pointer over a buffer: loads give words, stores must fit the element."""

    def __init__(self, buf, lo, hi):
        self.buf, self.lo, self.hi = buf, lo, hi

    def __getitem__(self, i):
        return Word32(self.buf[i.v if isinstance(i, Word32) else i])

    def __setitem__(self, i, value):
        v = value.v if isinstance(value, Word32) else value
        if not self.lo <= v <= self.hi:
            raise Overflow32("store of %d into a [%d, %d] element" % (v, self.lo, self.hi))
        self.buf[i.v if isinstance(i, Word32) else i] = v


def ptr8(buf):
    return buf if isinstance(buf, Ptr) else Ptr(buf, -128, 255)  # a byte store keeps the low 8 bits


def ptr32(buf):
    return buf if isinstance(buf, Ptr) else Ptr(buf, LO, HI)


def int32(value):
    return Word32(value)


def range32(*args):
    for v in builtins.range(*(a.v if isinstance(a, Word32) else a for a in args)):
        yield Word32(v)


def viper32(fn):
    """@micropython.viper on a 32-bit port: arguments become words or pointers, as annotated."""
    kinds = [fn.__annotations__.get(name) for name in fn.__code__.co_varnames[:fn.__code__.co_argcount]]

    def call(*args):
        conv = [a if k is None else k(a) for k, a in zip(kinds, args)]
        result = fn(*conv)
        return result.v if isinstance(result, Word32) else result

    call.__name__ = fn.__name__
    return call


def word32_module(name: str) -> types.ModuleType:
    """edge/<name>.py executed with 32-bit word semantics (its edge imports too)."""
    source = (EDGE / (name + ".py")).read_text()
    assert "from .compat import micropython, ptr8, ptr32" in source
    source = source.replace("from .compat import micropython, ptr8, ptr32", "")
    mod = types.ModuleType("word32_" + name)
    mod.__dict__.update(micropython=types.SimpleNamespace(viper=viper32), ptr8=ptr8, ptr32=ptr32, int=int32,
                        range=range32)
    if "from .float32 import rank" in source:
        source = source.replace("from .float32 import rank", "")
        mod.__dict__["rank"] = word32_module("float32").rank
    exec(compile(source, str(EDGE / (name + ".py")), "exec", dont_inherit=True), mod.__dict__)
    return mod


@pytest.fixture
def word32(monkeypatch):
    """Model() binds the 32-bit-word kernels while this fixture is active."""
    kernels = word32_module("kernels")
    monkeypatch.setattr(qis.edge.model, "kernels", kernels)
    for name in ("float32", "floatfix"):
        module = word32_module(name)
        monkeypatch.setitem(sys.modules, "qis.edge." + name, module)
        monkeypatch.setattr(qis.edge, name, module, raising=False)
    return kernels


def _exact(path, x: np.ndarray) -> None:
    """Compile path, run x under 32-bit words, require onnxruntime's outputs bit for bit."""
    qem, qm = compile_model(path)
    t = qm.tensors[qm.inputs[0][1]]
    feed = x.astype(np.float32)
    xq = quantize_like_ort(feed, t.scale, t.zero_point, np.int8 if t.dtype == 0 else np.uint8)
    res = compare(qm, ort_reference(path, qm, feed), run_cpython(qem, xq.reshape(len(x), -1)))
    assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0, res


def test_word32_catches_what_a_64bit_word_hides():
    with pytest.raises(Overflow32):
        Word32(0x7FFFFFFF) + 1
    with pytest.raises(Overflow32):
        Word32(1) << 32
    with pytest.raises(Overflow32):
        ptr8(bytearray(1))[0] = Word32(256)
    assert (Word32(-7) >> 1).v == -4 and (Word32(-7) // 2).v == -4


@pytest.mark.parametrize("name,shape", [("ecg_cnn", (1, 140)), ("ecg_mlp", (140,)), ("ecg_dscnn", (1, 140))])
def test_reference_models_under_32bit_words(word32, name, shape):
    from qis.tools.datasets.ecg5000 import load_ecg5000

    x, _ = load_ecg5000("test")
    path = models_dir() / name / "model.int8.onnx"
    if not path.exists():
        pytest.fail("reference model %s is missing" % path)
    _exact(path, x[::450].reshape((-1,) + shape))  # 10 beats


def test_requant_under_32bit_words_matches_float32_for_any_int32(word32):
    """Every int32 accumulator and every multiplier the compiler can emit (2**-40 .. 2**8)."""
    r = np.random.default_rng(0)
    accs = np.concatenate([r.integers(LO + 1, HI, 400), r.integers(-(1 << 24), 1 << 24, 400),
                           [LO + 1, HI, 0, 1, -1, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, -(1 << 24) - 3]])
    for mult in np.concatenate([2.0 ** r.uniform(-40, 8, 60), [2.0**-40, 2.0**8 - 1, 0.5, 1.0]]).astype(np.float32):
        big, shift = requant_params(mult)
        y = bytearray(len(accs))
        word32.requant(array("i", accs.tolist()), y, array("i", [1, 1, 128, 0, 255, 0, big, shift]), len(accs))
        want = np.rint(accs.astype(np.float32) * np.float32(big * 2.0**-shift)).astype(np.float64)
        np.testing.assert_array_equal(np.frombuffer(bytes(y), np.uint8).astype(int) - 128,
                                      np.clip(want, -128, 127), err_msg="multiplier %r" % float(mult))


def _unpack(v) -> tuple[int, int, int]:
    bits = int(np.array([v], np.float32).view(np.uint32)[0])
    return bits >> 31, ((bits >> 23) & 0xFF) - 150, (bits & 0x7FFFFF) | 0x800000


def _round_f32(value: Fraction) -> float:
    """value rounded to float32, half to even, exactly (Fraction in, float out)."""
    if value == 0:
        return 0.0
    sign, mag = (-1 if value < 0 else 1), abs(value)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    while Fraction(2) ** e > mag:
        e -= 1
    while Fraction(2) ** (e + 1) <= mag:
        e += 1
    scaled = mag / Fraction(2) ** (e - 23)
    q, r = divmod(scaled.numerator, scaled.denominator)
    if 2 * r > scaled.denominator or (2 * r == scaled.denominator and q & 1):
        q += 1
    return sign * float(Fraction(q) * Fraction(2) ** (e - 23))


def test_float32_fma_is_exact_under_32bit_words():
    """float32.floatfix's fused multiply-add, against exact rounding of a * b + s: random
    magnitudes, cancellations, far-apart exponents and zeros, with 32-bit words."""
    fma = word32_module("floatfix")._fma
    r = np.random.default_rng(1)
    for trial in range(3000):
        a = np.float32(r.standard_normal() * 2.0 ** r.integers(-12, 12))
        b = np.float32(r.standard_normal() * 2.0 ** r.integers(-12, 12))
        s0 = [np.float32(r.standard_normal() * 2.0 ** r.integers(-40, 40)),
              np.float32(-float(a) * float(b) * (1 + r.standard_normal() * 2.0**-22)),
              np.float32(0), np.float32(float(a) * float(b) * 2.0 ** r.integers(-60, 60))][trial % 4]
        p = array("i", [0] * 21)
        if s0 != 0:
            sg, e, m = _unpack(s0)
            p[10], p[11], p[12] = sg, e + 4096, m
        words = []
        for v in (a, b):
            sg, e, m = _unpack(v)
            words += [((e + 24 - e) << 25) | (sg << 24) | m, 24 - e]  # t = 24 for each
        fma(p, *words)
        got = 0.0 if p[12] == 0 else (-1.0 if p[10] else 1.0) * p[12] * 2.0 ** (p[11] - 4096)
        want = _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(s0)))
        assert got == want, (a, b, s0, got, want)


def _extreme_matmul(k: int, n: int = 3) -> onnx.ModelProto:
    """uint8 x (zp 0) times int8 weights -128 (zp 127): every product is 255 * -255."""
    inits = [nh.from_array(np.full((k, n), -128, np.int8), "b"), nh.from_array(np.array(127, np.int8), "bz"),
             nh.from_array(np.array(0, np.uint8), "xz")]
    node = oh.make_node("MatMulInteger", ["x", "b", "xz", "bz"], ["y"], name="mmi")
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TP.UINT8, [1, k])],
                      [oh.make_tensor_value_info("y", TP.INT32, [1, n])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_worst_case_accumulators_fit_or_are_refused(word32):
    """The compiler's bound is the kernels' bound: the largest K it accepts runs in int32 on
    the worst input; one more step and it refuses the layer, naming it."""
    k = 16_000  # 2 * 255**2 * K + |c| stays below 2**31
    qem, _ = compile_model(_extreme_matmul(k))
    got = run_cpython(qem, np.full((1, k), 255, np.uint8))["y"]
    assert got.tolist() == [[-255 * 255 * k] * 3]
    with pytest.raises(CompileError, match=r"mmi \(MatMulInteger\): a partial sum can reach \d+, beyond int32"):
        compile_model(_extreme_matmul(17_000))


def test_conformance_graphs_under_32bit_words(word32, tmp_path):
    """A sample of the random conformance graphs (every op kind) under 32-bit words."""
    import qem_graphs as cg

    for kind in sorted(cg.GENERATORS):
        for seed in range(2):
            case = cg.GENERATORS[kind](np.random.default_rng(1000 + seed), tmp_path)
            qem, qm = compile_model(case.path)
            res = compare(qm, ort_reference(case.path, qm, case.feed), run_cpython(qem, case.rows(qm)))
            assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0, (kind, seed, res)


@pytest.mark.parametrize("arch", ["xtensawin", "armv7m"])
def test_mpy_cross_compiles_every_edge_module(tmp_path, arch):
    modules = sorted(EDGE.rglob("*.py"))
    assert any(p.name == "kernels.py" for p in modules) and any(p.name == "float32.py" for p in modules)
    for src in modules:
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run([str(Path(sys.executable).parent / "mpy-cross"), "-march=" + arch, "-o", str(out),
                               str(src)], capture_output=True, text=True)
        assert proc.returncode == 0 and out.stat().st_size > 0, (src, proc.stderr)
        head = out.read_bytes()[:4]
        assert head[0] == ord("M") and head[1] == 6, head  # .mpy version 6


def test_mpy_cross_output_runs_in_the_unix_port(tmp_path):
    """x64 .mpy of the edge package (viper included) imports and runs in the test binary."""
    pkg = tmp_path / "edge"
    for src in sorted(EDGE.rglob("*.py")):
        dest = pkg / src.relative_to(EDGE).with_suffix(".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "mpy-cross"), "-march=x64", "-o", str(dest), str(src)],
                       check=True)
    code = ("from edge import kernels, float32\nfrom array import array\n"
            "print(kernels.__file__, kernels.dot(bytearray([129, 130]), bytearray([131, 126]), 2, 3),"
            " float32.rank(5, array('i', [0x20000000, 0x20000009]), 0, 2))")
    proc = subprocess.run(micropython.command(["-c", code]), capture_output=True, text=True,
                          env=dict(micropython.env(), MICROPYPATH=str(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path, dot, rank = proc.stdout.split()
    assert path.endswith("edge/kernels.mpy") and (dot, rank) == ("-1", "1")
