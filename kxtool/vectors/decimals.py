"""The numbers of text rows, read with numpy a block at a time.

Most files write fixed-point decimals: without their dots they are integers, which numpy
parses several times faster than floats, and each is then divided by a power of ten (exact
integers by exact powers of ten: the correctly rounded value, bit-identical to a float parser).
:func:`_fixed_decimals` serves files where every value has the same number of decimals,
:func:`_decimals` any plain decimals (a few odd values converted one by one), and numpy's
float parser the rest. A bad row raises :class:`_Bad` with its index in the block.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True


class _Bad(Exception):
    """A malformed row (internal): message and 0-based row index within a batch."""

    def __init__(self, row: int, message: str, counts: Any = None) -> None:
        super().__init__(message)
        self.row = row
        self.message = message
        self.counts = counts  # values per line, when their number is what is wrong


def _is_number(tok: bytes) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return b"_" not in tok


def _numbers(joined: bytes, nlines: int, dim: int) -> np.ndarray:
    """The ``(nlines, dim)`` float32 values of newline-joined rows; raises :class:`_Bad`."""
    a = np.frombuffer(joined, dtype=np.uint8)
    values = _fixed_decimals(joined, a, nlines, dim)
    if values is not None:
        return values
    ws = _WS[a]
    starts = ~ws
    starts[1:] &= ws[:-1]
    cs = np.cumsum(starts, dtype=np.int32)
    per_line = np.diff(np.concatenate(([0], cs[np.flatnonzero(a == 10)], cs[-1:])))
    if (per_line != dim).any():
        i = int(np.flatnonzero(per_line != dim)[0])
        n = int(per_line[i])
        raise _Bad(i, f"expected {dim} numbers after the word, found {n}", per_line)
    values = _decimals(joined, a, ws, starts, cs)
    if values is None:
        values = _parse_floats(joined, np.float32)
    if values is None or values.size != nlines * dim:
        _locate_non_number(joined.split(b"\n"))
        raise _Bad(0, "malformed numbers")  # pragma: no cover - located above
    values = values.reshape(nlines, dim)
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise _Bad(i, "a value is not a finite number (nan or inf)")
    return values


def _parse_floats(text: bytes, dtype: Any) -> np.ndarray | None:
    """numpy's whitespace-separated number parser; None if something is not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


_POW10 = 10.0 ** np.arange(19)
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
_ODD = ~(_DIGIT | _WS)  # bytes that make a value need the general float parser
_ODD[[43, 45, 46]] = False  # + - .


def _fixed_decimals(joined: bytes, a: np.ndarray, nlines: int, dim: int) -> np.ndarray | None:
    """The fastest path: every value has one dot and the same number F of digits after it
    (word2vec's ``%f`` writes ``-0.123456``). Returns ``(nlines, dim)`` float32 or None.

    If each dot is followed by exactly F digits and then whitespace, no value holds two dots;
    if moreover there are ``nlines * dim`` dots, ``dim`` on each line, and the text without its
    dots parses as exactly that many integers, every value is one such decimal.
    """
    n = nlines * dim
    dots = np.flatnonzero(a == 46)
    if len(dots) != n or n == 0:
        return None
    after = dots[0] + 1
    f = 0
    while after + f < len(a) and _DIGIT[a[after + f]]:
        f += 1
    if f > 17:
        return None
    padded = np.concatenate((a, np.full(f + 1, 32, dtype=np.uint8)))
    for k in range(1, f + 1):
        if not _DIGIT[padded[dots + k]].all():
            return None
    if not (padded[dots + f + 1] <= 32).all():
        return None
    newlines = np.flatnonzero(a == 10)
    per_line = np.diff(np.concatenate(([0], np.searchsorted(dots, newlines), [n])))
    if (per_line != dim).any():
        return None
    ints = _parse_floats(joined.replace(b".", b""), np.int64)
    if ints is None or ints.size != n or (ints >= 10**18).any() or (ints <= -(10**18)).any():
        return None
    values = ints / _POW10[f]
    for z in np.flatnonzero(ints == 0).tolist():  # keep the sign of "-0.000000" (rare)
        p = int(dots[z]) - 1
        while p >= 0 and a[p] == 48:
            p -= 1
        if p >= 0 and a[p] == 45:
            values[z] = -0.0
    return values.astype(np.float32).reshape(nlines, dim)


def _decimals(
    joined: bytes, a: np.ndarray, ws: np.ndarray, starts: np.ndarray, cs: np.ndarray
) -> np.ndarray | None:
    """Fast path for plain decimals (``-0.123456``, ``0.41``, ``7``): float32 values, or None.

    Most vector files write fixed-point decimals. Without their dots they are integers, which
    numpy parses several times faster than floats; each is then divided by 10 to the power of
    its count of fraction digits (exact integers divided by exact powers of ten, so the result
    is the correctly rounded double, as a float parser gives). A few values with other
    characters (fastText's ``1.2e-05``) are converted one by one and blanked out first. Anything
    else (many such values, two dots, more than 18 characters) returns None: the general path.
    """
    spos = np.flatnonzero(starts)
    ntok = len(spos)
    if ntok == 0:
        return None
    ends = ~ws
    ends[:-1] &= ws[1:]
    epos = np.flatnonzero(ends) + 1
    if len(epos) != ntok:
        return None
    lengths = epos - spos
    odd = np.flatnonzero(_ODD[a])
    special_tok = None
    if len(odd):
        special_tok = np.unique(cs[odd].astype(np.int64) - 1)
        if len(special_tok) * 16 > ntok:
            return None
        buf = bytearray(joined)
        special = np.empty(len(special_tok), dtype=np.float64)
        for j, t in enumerate(special_tok.tolist()):
            s, e = int(spos[t]), int(epos[t])
            tok = joined[s:e]
            try:
                special[j] = float(tok)
            except ValueError:
                return None
            if b"_" in tok:
                return None
            buf[s:e] = b"0" * (e - s)
        joined = bytes(buf)
        a = np.frombuffer(joined, dtype=np.uint8)
        lengths[special_tok] = 1
    if int(lengths.max()) > 18:
        return None
    dots = np.flatnonzero(a == 46)
    frac = np.zeros(ntok, dtype=np.int64)
    if len(dots):
        dot_tok = cs[dots].astype(np.int64) - 1
        if len(dots) > 1 and not (np.diff(dot_tok) > 0).all():
            return None  # two dots in a token
        frac[dot_tok] = epos[dot_tok] - dots - 1
    ints = _parse_floats(joined.replace(b".", b""), np.int64)
    if ints is None or ints.size != ntok:
        return None
    values = ints / _POW10[frac]
    negative_zero = (ints == 0) & (a[spos] == 45)
    if negative_zero.any():
        values[negative_zero] = -0.0
    if special_tok is not None:
        values[special_tok] = special
    return values.astype(np.float32)


def _locate_non_number(rests: list[bytes]) -> None:
    for i, r in enumerate(rests):
        for t in r.split():
            if not _is_number(t):
                raise _Bad(i, f"{t.decode('utf-8', 'replace')!r} is not a number")
