"""Engine tests for kxtool.vectors: formats, errors, cache, default vectors."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import signal
import stat
import warnings

import numpy as np
import pytest

from kxtool import vectors as V
from kxtool.errors import KxError, KxWarning
from kxtool.vectors import (
    Vectors,
    binary_format,
    cache_path_for,
    check_default_language,
    convert_vectors,
    decimals,
    default_vectors,
    detect,
    kxv,
    load,
    load_vectors,
    read_cache,
    resolve_vectors,
    save_cache,
    text_format,
)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(d))
    monkeypatch.delenv("KXTOOL_VECTORS", raising=False)
    return d


def sample(n=40, dim=6, seed=0, prefix="w"):
    rng = np.random.default_rng(seed)
    words = [f"{prefix}{i}" for i in range(n - 3)] + ["café", "日本", "naïve-x"]
    m = rng.standard_normal((n, dim)).astype(np.float32)
    m[3, 0] = 1e-7  # needs an exponent
    return words, m


def fmt_row(row):
    return " ".join(repr(float(x)) for x in row)


def text_bytes(words, m, *, header=True, trailing_space=False, crlf=False):
    nl = "\r\n" if crlf else "\n"
    lines = [f"{len(words)} {m.shape[1]}"] if header else []
    end = " " if trailing_space else ""
    lines += [f"{w} {fmt_row(r)}{end}" for w, r in zip(words, m, strict=True)]
    return (nl.join(lines) + nl).encode("utf-8")


def binary_bytes(words, m, *, newline=True):
    out = [f"{len(words)} {m.shape[1]}\n".encode()]
    for w, r in zip(words, m, strict=True):
        out.append(
            w.encode("utf-8") + b" " + r.astype("<f4").tobytes() + (b"\n" if newline else b"")
        )
    return b"".join(out)


def write(path, data, compress=None):
    opener = {None: open, "gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compress]
    with opener(path, "wb") as f:
        f.write(data)
    return str(path)


def same(v: Vectors, words, m):
    assert v.words == list(words)
    np.testing.assert_array_equal(np.asarray(v.matrix), m)
    assert v.matrix.dtype == np.float32


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("compress", [None, "gz", "bz2", "xz"])
@pytest.mark.parametrize(
    "kind,expected_format",
    [
        ("word2vec", "word2vec"),
        ("glove", "glove"),
        ("fasttext", "word2vec"),
        ("crlf", "word2vec"),
        ("binary", "word2vec-binary"),
        ("binary-nonl", "word2vec-binary"),
    ],
)
def test_round_trip_every_format(tmp_path, kind, expected_format, compress):
    words, m = sample()
    data = {
        "word2vec": lambda: text_bytes(words, m),
        "glove": lambda: text_bytes(words, m, header=False),
        "fasttext": lambda: text_bytes(words, m, trailing_space=True),
        "crlf": lambda: text_bytes(words, m, crlf=True),
        "binary": lambda: binary_bytes(words, m),
        "binary-nonl": lambda: binary_bytes(words, m, newline=False),
    }[kind]()
    p = write(tmp_path / "vectors.data", data, compress)  # the name says nothing
    v = load_vectors(p)
    same(v, words, m)
    assert v.format == expected_format
    assert v.source == p
    assert not v.is_default
    # the cached load gives the same
    v2 = load_vectors(p)
    same(v2, words, m)
    assert v2.cache_path is not None and os.path.exists(v2.cache_path)
    # without cache too
    same(load_vectors(p, cache=False), words, m)


def test_cache_format_round_trip(tmp_path):
    words, m = sample()
    out = save_cache(Vectors(words, m), tmp_path / "x.kxv")
    v = load_vectors(out)
    same(v, words, m)
    assert isinstance(v.matrix, np.memmap)
    assert v.format == "kxtool"
    same(read_cache(out, limit=5), words[:5], m[:5])
    same(load_vectors(out, limit=5), words[:5], m[:5])


def test_float16_compressed_kxv(tmp_path):
    words, m = sample()
    p = tmp_path / "small.kxv"
    V.write_kxv(p, words, m, dtype="float16", compress=True)
    v = read_cache(p)
    assert v.words == words
    np.testing.assert_array_equal(v.matrix, m.astype(np.float16).astype(np.float32))
    same(read_cache(p, limit=3), words[:3], m[:3].astype(np.float16).astype(np.float32))


def test_multi_block_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "_BLOCK", 97)  # lines straddle every block boundary
    words, m = sample(n=300, dim=5)
    for data in (text_bytes(words, m), text_bytes(words, m, header=False), binary_bytes(words, m)):
        p = write(tmp_path / "multi", data)
        same(load_vectors(p, cache=False), words, m)
        same(load_vectors(p, limit=123, cache=False), words[:123], m[:123])


def test_no_final_newline_and_trailing_blank_lines(tmp_path):
    words, m = sample(n=5)
    data = text_bytes(words, m, header=False)
    same(load_vectors(write(tmp_path / "a", data.rstrip(b"\n")), cache=False), words, m)
    same(load_vectors(write(tmp_path / "b", data + b"\n \n\n"), cache=False), words, m)


@pytest.mark.parametrize("kind", ["word2vec", "glove", "binary"])
def test_limit(tmp_path, kind):
    words, m = sample()
    data = {
        "word2vec": text_bytes(words, m),
        "glove": text_bytes(words, m, header=False),
        "binary": binary_bytes(words, m),
    }[kind]
    p = write(tmp_path / "v", data)
    same(load_vectors(p, limit=7), words[:7], m[:7])
    same(load_vectors(p, limit=7), words[:7], m[:7])  # from the limit-7 cache
    same(load_vectors(p, limit=1000), words, m)
    with pytest.raises(KxError, match="positive"):
        load_vectors(p, limit=0)


def test_limit_beyond_header_count_is_fine_but_excess_lines_are_not(tmp_path):
    words, m = sample(n=4)
    data = text_bytes(words, m)
    bad = data.replace(b"4 6\n", b"3 6\n", 1)
    p = write(tmp_path / "v", bad)
    with pytest.raises(KxError, match=r"v:5: more vectors than the 3 announced"):
        load_vectors(p)
    same(load_vectors(p, limit=2, cache=False), words[:2], m[:2])


# ----------------------------------------------------------------------------- errors


def lines_file(tmp_path, lines, name="bad.txt"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(p)


GOOD = ["a 1 2 3", "b 4 5 6", "c 7 8 9"]


@pytest.mark.parametrize(
    "lines,where,what",
    [
        (
            ["3 3", "a 1 2 3", "b 1 2", "c 1 2 3"],
            ":3:",
            "expected 3 numbers after the word, found 2",
        ),
        (["3 3", "a 1 2 3", "b 1 2 3", "c 1 2 3 4"], ":4:", "found 4"),
        (["a 1 2 3", "b 1 2 3", "c 1 x 3"], ":3:", "'x' is not a number"),
        (["a 1 2 3", "b 1 2,5 3"], ":2:", "'2,5' is not a number"),
        (["a 1 2 3", "b 1 2.5.1 3"], ":2:", "'2.5.1' is not a number"),
        (["a 1 2 3", "b 1 nan 3"], ":2:", "not a finite number"),
        (["a 1 2 3", "b 1 inf 3"], ":2:", "not a finite number"),
        (["a 1 2 3", "b 4 5 6", "a 7 8 9"], ":3:", "duplicate word 'a' \\(first at line 1\\)"),
        (["2 3", "a 1 2 3", "a 7 8 9"], ":3:", "duplicate word 'a' \\(first at line 2\\)"),
        (["a 1 2 3", "", "b 4 5 6"], ":2:", "blank line"),
        (["a 1 2 3", "b"], ":2:", "found 1 field"),
        (["a"], ":1:", "found 1 field"),
        (["5 3", "a 1 2 3", "b 4 5 6"], ": ", "announces 5 vectors but the file has 2"),
        (["2 3"], ": ", "no vectors after the header"),
    ],
)
def test_malformed_text(tmp_path, lines, where, what):
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=what) as e:
        load_vectors(p)
    assert e.value.message.startswith(p + where)
    assert "\n" not in e.value.message


def test_malformed_line_number_far_into_a_big_file(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "_BLOCK", 1000)
    words, m = sample(n=500, dim=4)
    lines = text_bytes(words, m).decode().splitlines()
    lines[377] = lines[377] + " 0.5"  # line 378 of the file
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=r"bad.txt:378: expected 4 numbers after the word, found 5"):
        load_vectors(p)
    dup = text_bytes(words, m).decode().splitlines()
    dup[400] = "w3" + dup[400][dup[400].index(" ") :]
    p = lines_file(tmp_path, dup, "dup.txt")
    with pytest.raises(KxError, match=r"dup.txt:401: duplicate word 'w3' \(first at line 5\)"):
        load_vectors(p)


def test_malformed_binary(tmp_path):
    words, m = sample(n=5, dim=4)
    data = binary_bytes(words, m)
    p = write(tmp_path / "trunc.bin", data[:-10])
    with pytest.raises(KxError, match=r"trunc.bin: record 5: truncated vector data"):
        load_vectors(p)
    p = write(tmp_path / "short.bin", data.replace(b"5 4\n", b"9 4\n", 1))
    with pytest.raises(KxError, match="announces 9 vectors but the data ends after 5"):
        load_vectors(p)
    dup = binary_bytes(["a", "b", "a"], m[:3])
    p = write(tmp_path / "dup.bin", dup)
    with pytest.raises(
        KxError, match=r"dup.bin: record 3: duplicate word 'a' \(first at record 1\)"
    ):
        load_vectors(p)
    nanm = m[:3].copy()
    nanm[1, 2] = np.nan
    p = write(tmp_path / "nan.bin", binary_bytes(["a", "b", "c"], nanm))
    with pytest.raises(KxError, match=r"nan.bin: record 2: a value is not a finite number"):
        load_vectors(p)


def test_file_errors(tmp_path):
    with pytest.raises(KxError, match="No such file"):
        load_vectors(tmp_path / "missing.txt")
    with pytest.raises(KxError, match="is a directory"):
        load_vectors(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(KxError, match="empty.txt: the vectors file is empty"):
        load_vectors(empty)
    blank = tmp_path / "blank.txt"
    blank.write_bytes(b"\n\n")
    with pytest.raises(KxError, match="blank.txt"):
        load_vectors(blank)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(text_bytes(*sample()))[:-30])
    with pytest.raises(KxError, match="broken.gz"):
        load_vectors(broken)
    fake = tmp_path / "fake.kxv"
    fake.write_bytes(V.MAGIC + b"\0" * 100)
    with pytest.raises(KxError, match="fake.kxv: not a valid kxtool vectors file"):
        load_vectors(fake)


# ----------------------------------------------------------------------------- cache


def test_cache_entries_and_cleaning(tmp_path, _cache_dir):
    words, m = sample()
    keep = write(tmp_path / "keep.txt", text_bytes(words, m))
    gone = write(tmp_path / "gone.txt", text_bytes(words, m))
    changed = write(tmp_path / "changed.txt", text_bytes(words, m))
    for p in (keep, gone, changed):
        load_vectors(p)
    os.unlink(gone)
    write(tmp_path / "changed.txt", text_bytes(words[:-1], m[:-1]))
    d = _cache_dir / "vectors"
    (d / "junk.kxv").write_bytes(b"not a cache")
    partial = d / ".x.kxv.abc.kxtmp"
    partial.write_bytes(b"half")
    os.utime(partial, (1, 1))  # an interrupted write, long ago
    (d / ".y.kxv.def.kxtmp").write_bytes(b"in progress")  # recent: left alone
    status = {(os.path.basename(e.source or e.path), e.status) for e in V.cache_entries()}
    assert status == {
        ("keep.txt", "current"),
        ("gone.txt", "orphaned"),
        ("changed.txt", "stale"),
        ("junk.kxv", "damaged"),
        (".x.kxv.abc.kxtmp", "partial"),
    } and len(V.cache_entries()) == 5
    removed = V.clean_cache()
    assert {e.status for e in removed} == {"orphaned", "stale", "damaged", "partial"}
    assert [e.status for e in V.cache_entries()] == ["current"]
    assert load_vectors(keep).cache_path is not None
    assert len(V.clean_cache(everything=True)) == 1 and V.cache_entries() == []
    assert sorted(os.listdir(d)) == [".y.kxv.def.kxtmp"]


def test_cache_is_written_and_used(tmp_path, _cache_dir, monkeypatch):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    v = load_vectors(p)
    assert v.cache_path is not None
    assert os.path.dirname(v.cache_path) == str(_cache_dir / "vectors")
    assert cache_path_for(p) == v.cache_path

    def boom(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(load, "_parse", boom)
    v2 = load_vectors(p)
    same(v2, words, m)
    assert isinstance(v2.matrix, np.memmap)
    assert v2.format == "word2vec" and v2.source == p
    same(load_vectors(p, limit=4), words[:4], m[:4])  # the full cache serves limits


def test_cache_invalidated_when_source_changes(tmp_path):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    same(load_vectors(p), words, m)
    m2 = m + 1
    write(p, text_bytes(words, m2))
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    v = load_vectors(p)
    same(v, words, m2)
    # same size and a new mtime only: still re-read
    m3 = m2.copy()
    m3[0, 0] = -m3[0, 0] if m3[0, 0] != 0 else 1.0
    data = text_bytes(words, m3)
    if len(data) == os.path.getsize(p):
        write(p, data)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
        same(load_vectors(p), words, m3)


def test_damaged_cache_is_rebuilt(tmp_path):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    c = load_vectors(p).cache_path
    with open(c, "r+b") as f:
        f.truncate(100)
    with pytest.warns(KxWarning, match="damaged"):
        same(load_vectors(p), words, m)
    assert kxv._read_kxv_header(c, strict=False) is not None


def test_cache_falls_back_beside_the_file_then_to_none(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    words, m = sample()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(ro / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    p = write(src / "v.txt", text_bytes(words, m))
    v = load_vectors(p)
    same(v, words, m)
    assert v.cache_path == str(src / "v.txt.kxv")
    os.unlink(v.cache_path)
    src.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        v = load_vectors(p)
        same(v, words, m)
        assert v.cache_path is None
    finally:
        src.chmod(0o755)
        ro.chmod(0o755)


def test_cache_falls_back_when_dir_is_a_file(tmp_path, monkeypatch):
    # works as root too: the cache "directory" is a regular file
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("KXTOOL_CACHE_DIR", str(blocker))
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    v = load_vectors(p)
    same(v, words, m)
    assert v.cache_path == str(tmp_path / "v.txt.kxv")
    same(load_vectors(p), words, m)


def test_cache_write_failure_midway_keeps_loading(tmp_path, monkeypatch):
    words, m = sample(n=300, dim=5)
    monkeypatch.setattr(load, "_BLOCK", 200)
    monkeypatch.setattr(binary_format, "_BIN_BATCH", 10)
    calls = {"n": 0}
    real_add = kxv._FileSink.add

    def flaky(self, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        real_add(self, chunk)

    monkeypatch.setattr(kxv._FileSink, "add", flaky)
    for data in (text_bytes(words, m), binary_bytes(words, m)):
        calls["n"] = 0
        p = write(tmp_path / "v.any", data)
        v = load_vectors(p)
        same(v, words, m)
        assert v.cache_path is None
    leftovers = [f for f in os.listdir(tmp_path / "cache" / "vectors") if f.endswith(".kxtmp")]
    assert leftovers == []


def test_no_cache_option_writes_nothing(tmp_path, _cache_dir):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    v = load_vectors(p, cache=False)
    assert v.cache_path is None
    assert not (_cache_dir / "vectors").exists() or not os.listdir(_cache_dir / "vectors")


def test_convert_streams_into_the_cache_format(tmp_path):
    words, m = sample()
    p = write(tmp_path / "v.txt.gz", text_bytes(words, m, header=False), "gz")
    out = tmp_path / "v.kxv"
    v = convert_vectors(p, out, limit=30)
    same(v, words[:30], m[:30])
    same(load_vectors(out), words[:30], m[:30])
    with pytest.raises(KxError, match="stdout"):
        convert_vectors(p, "-")
    with pytest.raises(KxError, match="does not exist"):
        convert_vectors(p, tmp_path / "nodir" / "x.kxv")


def test_nul_in_word_cannot_be_cached(tmp_path):
    with pytest.raises(KxError, match="NUL"):
        save_cache(Vectors(["a\0b"], np.zeros((1, 2), np.float32)), tmp_path / "x.kxv")


# ----------------------------------------------------------------------------- default


def test_default_vectors():
    v = default_vectors()
    assert v.is_default
    assert "GloVe" in v.source
    assert len(v) == 100_000 and v.dim == 50
    assert v.matrix.dtype == np.float32
    assert v.words[:5] == ["the", ",", ".", "of", "to"]
    assert len(set(v.words)) == len(v.words)
    # GloVe 6B 50d, first vector of "the" (glove.6B.50d.txt line 1), stored as float16
    np.testing.assert_allclose(v["the"][:3], [0.418, 0.24968, -0.41242], rtol=1e-3)
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(v["king"], v["queen"]) > cos(v["king"], v["banana"])
    assert default_vectors() is v


def test_resolve_vectors(tmp_path, monkeypatch):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    assert resolve_vectors(None).is_default
    assert len(resolve_vectors(None, limit=10)) == 10
    monkeypatch.setenv("KXTOOL_VECTORS", p)
    v = resolve_vectors(None)
    assert not v.is_default and v.words == words
    other = write(tmp_path / "o.txt", text_bytes(words[:3], m[:3], header=False))
    assert resolve_vectors(other).words == words[:3]
    monkeypatch.setenv("KXTOOL_VECTORS", "")
    assert resolve_vectors(None).is_default


def test_chinese_with_default_is_a_clear_error():
    v = default_vectors()
    check_default_language(v, "the cat sat on the mat")
    with pytest.raises(KxError, match="--vectors"):
        check_default_language(v, ["a document", "我们今天去北京"])
    check_default_language(Vectors(["x"], np.zeros((1, 2), np.float32)), "我们")


# ----------------------------------------------------------------------------- parallel


def test_parallel_parse_matches_and_reports_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "_BLOCK", 2000)
    words, m = sample(n=400, dim=5)
    data = text_bytes(words, m)
    p = write(tmp_path / "v.txt", data + b"\n\n")
    same(load_vectors(p, cache=False, workers=2), words, m)
    same(load_vectors(p, limit=151, cache=False, workers=3), words[:151], m[:151])
    lines = data.decode().splitlines()
    lines[300] = lines[300].replace(" ", " 7 ", 1)
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=r"bad.txt:301: expected 5 numbers after the word, found 6"):
        load_vectors(p, cache=False, workers=2)
    lines = data.decode().splitlines()
    lines[250] = ""
    p = lines_file(tmp_path, lines, "blank.txt")
    with pytest.raises(KxError, match=r"blank.txt:251: blank line"):
        load_vectors(p, workers=2)


def test_a_parsing_worker_that_dies_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "_BLOCK", 2000)
    p = write(tmp_path / "v.txt", text_bytes(*sample(n=400, dim=5)))
    parent = os.getpid()
    real = text_format._chunk_job

    def dies_in_a_worker(chunk, dim):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(chunk, dim)

    monkeypatch.setattr(text_format, "_chunk_job", dies_in_a_worker)  # inherited by the fork
    with pytest.raises(KxError, match=r"a vectors parsing process died .*--workers 1"):
        load_vectors(p, cache=False, workers=2)
    same(load_vectors(p, cache=False, workers=1), *sample(n=400, dim=5))


def test_auto_workers(tmp_path, monkeypatch):
    p = write(tmp_path / "v.txt", text_bytes(*sample()))
    assert text_format._workers(p, None) == 1
    assert text_format._workers(p, 3) == 3
    monkeypatch.setattr(text_format, "_PARALLEL_MIN", 10)
    assert text_format._workers(p, None) >= 1
    assert text_format._workers("-", None) == 1


def test_env_vectors_error_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("KXTOOL_VECTORS", str(tmp_path / "nope.vec"))
    with pytest.raises(KxError, match="nope.vec.*named by KXTOOL_VECTORS"):
        resolve_vectors(None)


def test_binary_word_with_newline_inside(tmp_path):
    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    p = write(tmp_path / "odd.bin", binary_bytes(["a", "b\nc", "d"], m))
    v = load_vectors(p, cache=False)
    assert v.words == ["a", "b\nc", "d"]


def test_invalid_utf8_words_are_replaced(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"caf\xe9 1 2\nthe 3 4\n")
    with pytest.warns(KxWarning, match="1 word is not valid UTF-8"):
        v = load_vectors(p, cache=False)
    assert v.words == ["caf\ufffd", "the"]


def test_short_text_rows_with_non_ascii_words_are_text(tmp_path):
    p = tmp_path / "small.vec"
    p.write_bytes("3 4\nking 1 2 3 4\n日本 1 2 3 4\nçà 0 0 0 0\n".encode())
    v = load_vectors(p, cache=False)
    assert v.format == "word2vec" and v.words == ["king", "日本", "çà"]


def test_words_with_spaces_like_glove_840b(tmp_path):
    # glove.840B.300d.txt has lines such as "at name@domain.com 0.0061 ..." and ". . . -0.1 ..."
    p = lines_file(tmp_path, ["the 1 2 3", "at name@domain.com 4 5 6", ". . . 7 8 9", "x 1 1 1"])
    v = load_vectors(p, cache=False)
    assert v.words == ["the", "at name@domain.com", ". . .", "x"]
    np.testing.assert_array_equal(v["at name@domain.com"], [4, 5, 6])
    same(load_vectors(p), v.words, np.asarray(v.matrix))  # and through the cache
    p = lines_file(tmp_path, ["the 1 2 3", "b 4 5 6 7"], "extra.txt")
    with pytest.raises(KxError, match="extra.txt:2: expected 3 numbers after the word, found 4"):
        load_vectors(p)


def _fast_and_general(text: bytes):
    a = np.frombuffer(text, dtype=np.uint8)
    ws = decimals._WS[a]
    starts = ~ws
    starts[1:] &= ws[:-1]
    cs = np.cumsum(starts, dtype=np.int32)
    return decimals._decimals(text, a, ws, starts, cs), decimals._parse_floats(text, np.float32)


@pytest.mark.parametrize(
    "style", ["%.6f", "%.5f", "%.3f", "%.1f", "%.9f", "repr", "mixed", "fasttext"]
)
def test_decimal_fast_path_is_bit_exact(style):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(20000) * 10.0 ** rng.integers(-3, 4, 20000)
    x[:5] = [0.0, -0.0, -1e-9, 5.0, -7.0]
    if style == "fasttext":  # "%g": a few values with exponents among plain decimals
        y = rng.standard_normal(20000) * 0.05
        toks = [format(v, "g") for v in y] + ["-0e0", "1E+2", "2.5e-300", "7e-50"]
        assert any("e" in t for t in toks[:20000])
    elif style == "repr":
        toks = [t for t in (str(np.float32(v)) for v in x) if "e" not in t]
    elif style == "mixed":
        forms = ["%.6f", "%.2f", "%d", "%+.4f", "%.0f.", "%.5f"]
        toks = [forms[i % len(forms)] % v for i, v in enumerate(x)]
        toks += [".5", "-.25", "-0.000000", "+0", "123456789012.12345"]
    else:
        toks = [style % v for v in x]
    text = ("\n".join(" ".join(toks[i : i + 50]) for i in range(0, len(toks), 50))).encode()
    fast, general = _fast_and_general(text)
    assert fast is not None
    assert fast.view(np.uint32).tolist() == general.view(np.uint32).tolist()


@pytest.mark.parametrize(
    "text",
    [
        b"1.5e-05 2",
        b"nan 1",
        b"1.2.3 4",
        b"- 1",
        b". 1",
        b"1234567890123456789 1",
        b"0x10 1",
        b" ".join([b"1.5"] * 40 + [b"1_0e1"]),
        b" ".join([b"1.5"] * 40 + [b"1e1e1"]),
    ],
)
def test_decimal_fast_path_declines_the_rest(text):
    fast, _ = _fast_and_general(text)
    assert fast is None


def test_fasttext_exponents_still_load(tmp_path):
    p = lines_file(tmp_path, ["2 3", "a 1.5e-05 -2.5E+3 0.1", "b 1 2 3"])
    v = load_vectors(p, cache=False)
    np.testing.assert_array_equal(v["a"], np.array([1.5e-05, -2500, 0.1], dtype=np.float32))


@pytest.mark.parametrize("f", [0, 1, 5, 6, 9])
def test_fixed_decimal_fast_path_is_bit_exact(f):
    rng = np.random.default_rng(f)
    x = rng.standard_normal((300, 20)) * 10.0 ** rng.integers(-2, 5, (300, 20))
    x[0, :4] = [0.0, -1e-12, -0.0, 12345.0]
    fmt = "%." + str(f) + "f" + ("." if f == 0 else "")
    rows = [" ".join(fmt % v for v in r) for r in x]
    text = "\n".join(rows).encode()
    a = np.frombuffer(text, dtype=np.uint8)
    fast = decimals._fixed_decimals(text, a, 300, 20)
    assert fast is not None
    general = decimals._parse_floats(text, np.float32).reshape(300, 20)
    assert fast.view(np.uint32).tolist() == general.view(np.uint32).tolist()


@pytest.mark.parametrize(
    "rows",
    [
        ["0.12 0.123", "0.11 0.22"],  # fraction lengths differ
        ["0.12 3", "0.11 0.22"],  # a value without a dot
        ["0.12 0.12.12", "0.11 0.22"],  # two dots
        ["0.12 1e-05", "0.11 0.22"],
        ["0.12 0.13 0.14", "0.11"],  # per-line counts differ
        ["12345678901234567.12 0.13", "0.11 0.22"],  # too many digits
    ],
)
def test_fixed_decimal_fast_path_declines_the_rest(rows):
    text = "\n".join(rows).encode()
    assert decimals._fixed_decimals(text, np.frombuffer(text, dtype=np.uint8), 2, 2) is None


# ----------------------------------------------------------------------------- issue 9


def rewrite_header(path, change):
    """Rewrite the JSON header of a .kxv file in place through ``change(header_dict)``."""
    import json
    import struct

    with open(path, "rb") as f:
        data = f.read()
    hoff, hlen = struct.unpack("<QQ", data[8:24])
    h = json.loads(data[hoff : hoff + hlen])
    change(h)
    new = json.dumps(h).encode()
    data = data[:8] + struct.pack("<QQ", hoff, len(new)) + data[24:hoff] + new
    with open(path, "wb") as f:
        f.write(data)


def damage(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    "patch",
    [b"\xff\xff\xff\xff", b"\x00\x00\x80\x7f", b"\x01"],  # nan, inf, one finite bit flipped
    ids=["nan", "inf", "bit"],
)
def test_damaged_cache_matrix_is_found_and_rebuilt(tmp_path, _cache_dir, patch):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    c = load_vectors(p).cache_path
    h = kxv._read_kxv_header(c, strict=True)
    offset = h["matrix_offset"] + 4 * (m.shape[1] * 5 + 2)  # row 5, value 2
    if patch == b"\x01":
        with open(c, "rb") as f:
            f.seek(offset)
            patch = bytes([f.read(1)[0] ^ 1])
    damage(c, offset, patch)
    assert [e.status for e in V.cache_entries()] == ["damaged"]
    with pytest.warns(KxWarning, match=r"cache .* is damaged .*rebuilding it from"):
        v = load_vectors(p)
    same(v, words, m)
    assert np.isfinite(v.norms()).all()
    assert [e.status for e in V.cache_entries()] == ["current"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same(load_vectors(p), words, m)  # the rebuilt cache is good


def test_damaged_cache_vocabulary_is_found_and_rebuilt(tmp_path, _cache_dir):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    c = load_vectors(p).cache_path
    h = kxv._read_kxv_header(c, strict=True)
    damage(c, h["words_offset"] + 1, b"X")  # "w0" becomes "wX": still valid UTF-8
    assert [e.status for e in V.cache_entries()] == ["damaged"]
    with pytest.warns(KxWarning, match="damaged"):
        same(load_vectors(p), words, m)


def test_damaged_kxv_source_is_an_error(tmp_path):
    words, m = sample()
    out = save_cache(Vectors(words, m), tmp_path / "x.kxv")
    damage(out, kxv._DATA_OFFSET + 40, b"\x01\x02")
    with pytest.raises(KxError, match=r"x.kxv: .*damaged"):
        load_vectors(out)
    with pytest.raises(KxError, match="finite"):
        save_cache(Vectors(["a", "b"], np.array([[1, np.inf]] * 2, np.float32)), tmp_path / "y")


def test_big_cache_is_sampled_on_load_and_checked_in_full_by_the_listing(
    tmp_path, _cache_dir, monkeypatch
):
    monkeypatch.setattr(kxv, "_CRC_CHUNK", 64)
    monkeypatch.setattr(kxv, "_VERIFY_BYTES", 128)  # two chunks: the first and the last
    words, m = sample(n=40, dim=6)  # 960 matrix bytes, 15 chunks
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    c = load_vectors(p).cache_path
    assert len(kxv._read_kxv_header(c, strict=True)["checksums"]["matrix"]) == 15
    damage(c, kxv._DATA_OFFSET + 64 * 7 + 3, b"\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_vectors(p).cache_path == c  # not in the sample
    assert [e.status for e in V.cache_entries()] == ["damaged"]
    assert [e.status for e in V.clean_cache()] == ["damaged"]
    same(load_vectors(p), words, m)
    # damage in the first or last chunk is always found on load
    damage(c, kxv._DATA_OFFSET + 960 - 2, b"\xff\xff")
    with pytest.warns(KxWarning, match="damaged"):
        same(load_vectors(p), words, m)


def test_cache_without_checksums_is_stale_and_rebuilt(tmp_path, _cache_dir, monkeypatch):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    c = load_vectors(p).cache_path
    rewrite_header(c, lambda h: h.pop("checksums"))
    assert [e.status for e in V.cache_entries()] == ["stale"]
    assert cache_path_for(p) is None
    calls = []
    real = load._parse
    monkeypatch.setattr(load, "_parse", lambda *a, **k: calls.append(1) or real(*a, **k))
    same(load_vectors(p), words, m)
    assert calls == [1]
    assert [e.status for e in V.cache_entries()] == ["current"]
    # a .kxv file given as input is read without checksums (written by an older kxtool)
    out = save_cache(Vectors(words, m), tmp_path / "old.kxv")
    rewrite_header(out, lambda h: h.pop("checksums"))
    same(load_vectors(out), words, m)


def test_invalid_utf8_words_are_counted_in_a_warning(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"the 1 2\ncaf\xe9 3 4\nok 0 0\nna\xefve 5 6\n")
    for _ in range(2):  # parsed, then from the cache
        with pytest.warns(
            KxWarning, match=r"latin1.txt: 2 words are not valid UTF-8 \(the first on line 2\)"
        ):
            v = load_vectors(p)
        assert v.words == ["the", "caf\ufffd", "ok", "na\ufffdve"]
    m = np.zeros((3, 2), np.float32)
    b = write(tmp_path / "latin1.bin", binary_bytes(["a", "b", "c"], m).replace(b"b", b"\xff"))
    with pytest.warns(KxWarning, match=r"1 word is not valid UTF-8 \(the first in record 2\)"):
        assert load_vectors(b, cache=False).words == ["a", "\ufffd", "c"]


def test_utf8_bom_is_skipped(tmp_path):
    words, m = sample(n=5)
    for header in (True, False):
        p = write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + text_bytes(words, m, header=header))
        v = load_vectors(p, cache=False)
        same(v, words, m)
        assert v.format == ("word2vec" if header else "glove")


def _printable_floats(k, seed=0):
    """``k`` float32 values between 0.5 and 1 whose bytes are all printable ASCII."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0x21, 0x7F, (k, 4), dtype=np.uint8)
    b[:, 3] = 0x3F  # '?': sign 0, exponent 126 (the next byte is below 0x80)
    return b.tobytes()


@pytest.mark.parametrize("head_bytes", [None, 150])
def test_binary_with_printable_vectors_is_binary(tmp_path, monkeypatch, head_bytes):
    if head_bytes is not None:
        monkeypatch.setattr(detect, "_DETECT_BYTES", head_bytes)  # the file is bigger than the head
    words, m = sample(n=60, dim=4)
    m[0] = np.frombuffer(_printable_floats(4), "<f4")
    for newline in (True, False):
        p = write(tmp_path / "v.bin", binary_bytes(words, m, newline=newline))
        v = load_vectors(p, cache=False)
        assert v.format == "word2vec-binary"
        same(v, words, m)
    # every vector printable (a small file: the whole file is checked)
    m2 = np.frombuffer(_printable_floats(4 * 8, 1), "<f4").reshape(8, 4)
    words2 = [f"w{i}" for i in range(8)]
    p = write(tmp_path / "all.bin", binary_bytes(words2, m2, newline=False))
    if head_bytes is None:
        v = load_vectors(p, cache=False)
        assert v.format == "word2vec-binary"
        same(v, words2, m2)


def test_text_with_a_bad_line_is_still_text(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "_DETECT_BYTES", 300)
    words, m = sample(n=60, dim=4)
    lines = text_bytes(words, m).decode().splitlines()
    lines[3] += " 9"
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=r"bad.txt:4: expected 4 numbers after the word, found 5"):
        load_vectors(p, cache=False)


@pytest.mark.parametrize(
    "lines,fmt,words,dim",
    [
        (["2 5", "3 7", "x 1"], "glove", ["2", "3", "x"], 1),  # 1-d GloVe, not a header
        (["3 1", "a 0.5", "b 0.7", "c 0.1"], "word2vec", ["a", "b", "c"], 1),
        (["2 1", "3 7", "x 1", "y 2"], "glove", ["2", "3", "x", "y"], 1),  # count disagrees
        (["1 -5", "a 2", "b 3"], "glove", ["1", "a", "b"], 1),
        (["2 3", "a 1 2 3", "b 4 5 6"], "word2vec", ["a", "b"], 3),
    ],
)
def test_header_or_first_row(tmp_path, lines, fmt, words, dim):
    v = load_vectors(lines_file(tmp_path, lines), cache=False)
    assert (v.format, v.words, v.dim) == (fmt, words, dim)


@pytest.mark.parametrize(
    "lines", [["1 -5", "a 1 2 3 4 5"], ["0 3", "a 1 2 3"], ["-2 3", "a 1 2 3", "b 1 2 3"]]
)
def test_header_with_non_positive_numbers_is_an_error(tmp_path, lines):
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=r"bad.txt:1: invalid header .*must be positive"):
        load_vectors(p, cache=False)


def test_numpy_files_are_a_clear_error(tmp_path):
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 4), np.float32))
    npy = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, vectors=np.zeros((3, 4), np.float32))
    npz = buf.getvalue()
    cases = [("plain", npy, None), ("zipped", npz, None), ("npy.gz", npy, "gz")]
    for name, data, compress in cases + [("npz.gz", npz, "gz")]:
        p = write(tmp_path / name, data, compress)
        with pytest.raises(KxError, match=r"NumPy .* word2vec text or binary, GloVe") as e:
            load_vectors(p, cache=False)
        assert e.value.message.startswith(p + ": ")


def test_convert_to_a_compressed_name_is_an_error(tmp_path):
    words, m = sample()
    p = write(tmp_path / "v.txt", text_bytes(words, m))
    for name in ("out.kxv.gz", "out.kxv.bz2", "out.xz"):
        with pytest.raises(KxError, match=r"cannot be compressed"):
            convert_vectors(p, tmp_path / name)
        with pytest.raises(KxError, match=r"cannot be compressed"):
            save_cache(Vectors(words, m), tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["cache", "v.txt"] or os.listdir(tmp_path) == ["v.txt"]


def test_cache_temporaries_are_partial_once_their_owner_is_gone(tmp_path, _cache_dir):
    from kxtool import tempfiles

    words, m = sample()
    load_vectors(write(tmp_path / "v.txt", text_bytes(words, m)))
    d = _cache_dir / "vectors"
    host = tempfiles._host()
    dead = d / f".v.kxv.{host}@{os.getpid()}-1.0123abcd.kxtmp"  # our pid, another start: gone
    dead.write_bytes(b"half")
    alive = d / tempfiles.temp_file_name("w.kxv")
    alive.write_bytes(b"in progress")
    status = {os.path.basename(e.path): e.status for e in V.cache_entries()}
    assert status[dead.name] == "partial" and status[alive.name] == "writing"
    removed = V.clean_cache(everything=True)
    assert {e.status for e in removed} == {"partial", "current"}
    assert os.listdir(d) == [alive.name]


def test_text_with_non_ascii_words_and_a_bad_line_is_still_text(tmp_path, monkeypatch):
    # read as binary records, such text passes all but the size check (file bigger than head)
    monkeypatch.setattr(detect, "_DETECT_BYTES", 4000)
    words, m = sample(n=200, dim=50)
    rows = zip(words, m, strict=True)
    lines = ["200 50"] + [f"日本{w} " + " ".join(f"{x:.3f}" for x in r) for w, r in rows]
    lines[5] += " 9"
    p = lines_file(tmp_path, lines)
    with pytest.raises(KxError, match=r"bad.txt:6: expected 50 numbers after the word, found 51"):
        load_vectors(p, cache=False)
