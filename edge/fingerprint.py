# Similarity fingerprints: seeded SimHash (random hyperplanes) over an integer embedding.
#
# Two embeddings at a small angle agree on most hyperplane signs, so similar cases get
# fingerprints that differ in few bits, and fall into the same bucket in at least one of
# the L tables with high probability. A cryptographic hash would scatter them instead.
# The hyperplanes come from a xorshift32 generator seeded per (seed, table), in integer
# arithmetic only, so MicroPython and CPython compute the very same bits.

from .compat import zeros
from .errors import ConfigError

_MASK32 = 0xFFFFFFFF


def _xorshift32(state):
    state ^= (state << 13) & _MASK32
    state ^= state >> 17
    state ^= (state << 5) & _MASK32
    return state


class SimHash:
    """L tables of k bits each; fingerprint() packs them into L*k/8 bytes, table 0 first."""

    def __init__(self, dim, tables, bits, seed=1):
        if dim < 1 or tables < 1 or bits < 1 or (tables * bits) % 8:
            raise ConfigError("SimHash needs dim, tables, bits >= 1 and tables*bits a multiple of 8")
        self.dim = dim
        self.tables = tables
        self.bits = bits
        n = tables * bits
        # planes[h*dim + i]: coefficient of input i in hyperplane h, in -127..127
        self._planes = zeros("b", n * dim)
        for t in range(tables):
            state = (seed * 0x9E3779B1 + t * 0x85EBCA6B + 1) & _MASK32 or 1
            for j in range(bits * dim):
                state = _xorshift32(state)
                self._planes[(t * bits) * dim + j] = (state >> 8) % 255 - 127
        self._out = bytearray(n // 8)

    def fingerprint(self, vec):
        """Pack the sign bits of the hyperplane projections of vec (a sequence of ints).

        The returned bytearray is reused by the next call: copy it to keep it.
        """
        if len(vec) != self.dim:
            raise ConfigError("embedding has %d values, SimHash expects %d" % (len(vec), self.dim))
        out = self._out
        planes = self._planes
        dim = self.dim
        for i in range(len(out)):
            out[i] = 0
        for h in range(self.tables * self.bits):
            base = h * dim
            acc = 0
            for i in range(dim):
                acc += planes[base + i] * vec[i]
            if acc >= 0:
                out[h >> 3] |= 0x80 >> (h & 7)
        return out

def hamming(a, b):
    """Number of differing bits between two equal-length byte strings."""
    n = 0
    for i in range(len(a)):
        x = a[i] ^ b[i]
        while x:
            x &= x - 1
            n += 1
    return n


# ---------------------------------------------------------------- specs and addresses
#
# A fingerprint spec is what a domain's devices agree on so that their fingerprints meet:
# the feature vector (its version and dimension, computed by the domain's application,
# e.g. ecg.features), the SimHash seed, and how many leading bits of each table address a
# bucket. The frame's domain field names the spec: a new version of a domain's features
# gets a new domain id, so incomparable fingerprints never share an address.
#
# Every profile uses the same hyperplanes table by table (generation is sequential per
# table), so a profile with fewer tables or bits carries a prefix of a longer one's: a
# compact frame's table t is the first 8 bits of a full frame's table t, and both land
# at the same addresses.
ADDRESS_BITS = 8  # bucket bits of an address: the first 8 bits of a table


class Spec:
    def __init__(self, domain, name, version, dim, seed):
        self.domain = domain  # the frame's domain field
        self.name = name
        self.version = version
        self.dim = dim
        self.seed = seed

    def simhash(self, prof):
        """The SimHash of a frame profile (its L tables of k bits) under this spec."""
        return SimHash(self.dim, prof.fingerprint_tables, prof.fingerprint_bits, self.seed)


# domain id -> spec (docs/PROTOCOL.md, "Fingerprint specs")
SPECS = {1: Spec(1, "ecg-beat", 1, 16, 0x51EC)}


def spec(domain):
    """The fingerprint spec of a domain id; ConfigError for a domain this code does not know."""
    s = SPECS.get(domain)
    if s is None:
        raise ConfigError("no fingerprint spec for domain %d (known: %s)" % (domain, sorted(SPECS)))
    return s


def buckets(fingerprint, tables, bits):
    """The ADDRESS_BITS-bit bucket of each table of a packed fingerprint (L tables of
    `bits` bits, table 0 first, MSB first), as a list of ints."""
    if bits < ADDRESS_BITS or len(fingerprint) * 8 != tables * bits:
        raise ConfigError("a fingerprint of %d bytes is not %d tables of >= %d bits" % (len(fingerprint), tables, bits))
    out = []
    for t in range(tables):
        value = 0
        start = t * bits
        for h in range(start, start + ADDRESS_BITS):
            value = (value << 1) | ((fingerprint[h >> 3] >> (7 - (h & 7))) & 1)
        out.append(value)
    return out
