"""HMAC-MD5 from stored intermediate states, for CRAM-MD5 without plaintext.

CRAM-MD5's response is ``HMAC-MD5(password, challenge)``. HMAC is
``MD5((K ^ opad) || MD5((K ^ ipad) || message))``, and ``K ^ ipad`` and
``K ^ opad`` are each exactly one 64-byte MD5 block, so a server may store
the two MD5 chaining states after that first block (Cyrus' old
``cmusaslsecretCRAM-MD5``, Dovecot's ``{CRAM-MD5}`` scheme) instead of the
password, and finish the HMAC from them. Python's hashlib cannot export or
import an MD5 midstate, so this module carries a small MD5 compression
function (RFC 1321) of its own. It is checked against hashlib and hmac in
tests/unit/proto/test_sasl.py.

The states are still *plaintext-equivalent for CRAM-MD5* (whoever holds them
can answer any challenge), but they do not reveal the password itself.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

_BLOCK = 64
_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_MASK = 0xFFFFFFFF

# Per-round shift amounts and the sine-derived constants of RFC 1321.
_S = ([7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4
      + [6, 10, 15, 21] * 4)
_K = [
    0xD76AA478, 0xE8C7B756, 0x242070DB, 0xC1BDCEEE, 0xF57C0FAF, 0x4787C62A, 0xA8304613,
    0xFD469501, 0x698098D8, 0x8B44F7AF, 0xFFFF5BB1, 0x895CD7BE, 0x6B901122, 0xFD987193,
    0xA679438E, 0x49B40821, 0xF61E2562, 0xC040B340, 0x265E5A51, 0xE9B6C7AA, 0xD62F105D,
    0x02441453, 0xD8A1E681, 0xE7D3FBC8, 0x21E1CDE6, 0xC33707D6, 0xF4D50D87, 0x455A14ED,
    0xA9E3E905, 0xFCEFA3F8, 0x676F02D9, 0x8D2A4C8A, 0xFFFA3942, 0x8771F681, 0x6D9D6122,
    0xFDE5380C, 0xA4BEEA44, 0x4BDECFA9, 0xF6BB4B60, 0xBEBFBC70, 0x289B7EC6, 0xEAA127FA,
    0xD4EF3085, 0x04881D05, 0xD9D4D039, 0xE6DB99E5, 0x1FA27CF8, 0xC4AC5665, 0xF4292244,
    0x432AFF97, 0xAB9423A7, 0xFC93A039, 0x655B59C3, 0x8F0CCC92, 0xFFEFF47D, 0x85845DD1,
    0x6FA87E4F, 0xFE2CE6E0, 0xA3014314, 0x4E0811A1, 0xF7537E82, 0xBD3AF235, 0x2AD7D2BB,
    0xEB86D391,
]
_G = [i for i in range(16)] + [(5 * i + 1) % 16 for i in range(16, 32)] \
    + [(3 * i + 5) % 16 for i in range(32, 48)] + [(7 * i) % 16 for i in range(48, 64)]


def compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    """One MD5 compression: *state* after absorbing the 64-byte *block*."""
    if len(block) != _BLOCK:
        raise ValueError("an MD5 block is 64 bytes")
    m = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
        elif i < 32:
            f = (d & b) | (~d & c)
        elif i < 48:
            f = b ^ c ^ d
        else:
            f = c ^ (b | (~d & _MASK))
        f = (f + a + _K[i] + m[_G[i]]) & _MASK
        a, d, c = d, c, b
        b = (b + ((f << _S[i]) | (f >> (32 - _S[i])))) & _MASK
    return ((state[0] + a) & _MASK, (state[1] + b) & _MASK,
            (state[2] + c) & _MASK, (state[3] + d) & _MASK)


def finish(state: tuple[int, int, int, int], data: bytes, done: int) -> bytes:
    """The MD5 digest of a message whose first *done* bytes (a multiple of 64)
    produced *state* and whose remaining bytes are *data*."""
    total = done + len(data)
    tail = data + b"\x80" + b"\0" * ((55 - total) % 64) + struct.pack("<Q", (total * 8) & (2**64 - 1))
    for off in range(0, len(tail), _BLOCK):
        state = compress(state, tail[off:off + _BLOCK])
    return struct.pack("<4I", *state)


def _pack(state: tuple[int, int, int, int]) -> bytes:
    return struct.pack("<4I", *state)


def _unpack(raw: bytes) -> tuple[int, int, int, int]:
    a, b, c, d = struct.unpack("<4I", raw)
    return (a, b, c, d)


@dataclass(frozen=True)
class HmacMd5State:
    """The MD5 states after absorbing ``K ^ ipad`` (*inner*) and ``K ^ opad``
    (*outer*), each 16 bytes (four little-endian words)."""

    inner: bytes
    outer: bytes

    def __post_init__(self) -> None:
        if len(self.inner) != 16 or len(self.outer) != 16:
            raise ValueError("HMAC-MD5 states are 16 bytes each")

    @classmethod
    def from_key(cls, key: bytes) -> HmacMd5State:
        if len(key) > _BLOCK:
            key = hashlib.md5(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        inner = compress(_IV, bytes(k ^ 0x36 for k in key))
        outer = compress(_IV, bytes(k ^ 0x5C for k in key))
        return cls(_pack(inner), _pack(outer))

    @classmethod
    def from_bytes(cls, raw: bytes) -> HmacMd5State:
        """The 32-byte form of :meth:`to_bytes`."""
        if len(raw) != 32:
            raise ValueError("an HMAC-MD5 state is 32 bytes")
        return cls(raw[:16], raw[16:])

    def to_bytes(self) -> bytes:
        return self.inner + self.outer

    def digest(self, message: bytes) -> bytes:
        """``HMAC-MD5(K, message)``."""
        inner = finish(_unpack(self.inner), message, _BLOCK)
        return finish(_unpack(self.outer), inner, _BLOCK)

    def hexdigest(self, message: bytes) -> str:
        return self.digest(message).hex()


__all__ = ["HmacMd5State", "compress", "finish"]
