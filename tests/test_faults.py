"""One fault matrix over every command: bad input and a full stdout are one line on stderr
that names the file, exit 1, no traceback, and nothing left in the temporary directory.

Each command runs as a real ``kxtool`` subprocess with ``$TMPDIR`` pointing at an empty
directory of the test, which must be empty again afterwards. The full stdout is a device
node made in the test's directory (never /dev/full itself).
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

FAULTS = [
    "missing",
    "directory",
    "empty",
    "corrupt-gz",
    "truncated-gz",
    "truncated-zst",
    "unsupported-lz4",
    "full-stdout",
]

# command name -> argv with {F} where the faulty file goes ({OK}: a good text file,
# {VEC}: a good vectors file)
COMMANDS = {
    "shuffle": ["shuffle", "{F}"],
    "shuffle-2pass": ["shuffle", "{OK}", "{F}", "--memory", "8M", "-j", "2"],
    "wmd": ["wmd", "{F}", "{OK}", "--vectors", "{VEC}"],
    "wmd-top": ["wmd", "{OK}", "{F}", "--top", "2", "--vectors", "{VEC}"],
    "dim-corpus": ["dim", "--corpus", "{F}"],
    "dim-vectors": ["dim", "--vectors", "{F}"],
    "hubness": ["hubness", "{F}", "-k", "3"],
    "vectors-info": ["vectors", "info", "{F}"],
    "vectors-convert": ["vectors", "convert", "{F}", "{OUT}"],
}

# where an empty input is a valid one (nothing to do), the run succeeds with empty output
EMPTY_IS_FINE = {"shuffle", "shuffle-2pass", "wmd-top"}


def _vectors_text(words: list[str], dim: int = 6) -> str:
    rng = np.random.default_rng(1)
    return "".join(w + " " + " ".join(f"{x:.4f}" for x in rng.normal(size=dim)) + "\n"
                   for w in words)


WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "home"]
TEXT = b"".join(b"the cat sat on the mat %d\n" % i for i in range(30))
VECTORS = _vectors_text(WORDS + [str(i) for i in range(30)]).encode()


def _make(kind: str, tmp, good: bytes):
    p = tmp / "faulty.txt"
    if kind == "missing":
        return p
    if kind == "directory":
        p.mkdir()
        return p
    if kind == "empty":
        p.write_bytes(b"")
        return p
    blob = gzip.compress(good if good is VECTORS else good * 40)
    if kind == "corrupt-gz":
        bad = bytearray(blob)
        for i in range(len(bad) // 3, len(bad) // 3 + 30):
            bad[i] ^= 0x5A
        p.write_bytes(bytes(bad))
    elif kind == "truncated-gz":
        p.write_bytes(blob[: len(blob) // 2])
    elif kind == "truncated-zst":
        import zstandard

        z = zstandard.ZstdCompressor(write_checksum=True).compress(good * 40)
        p.write_bytes(z[: len(z) // 2])
    elif kind == "unsupported-lz4":
        p.write_bytes(b"\x04\x22\x4d\x18\x64\x40\xa7" + b"\x00" * 50)
    return p


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_fault(tmp_path, command, fault):
    work = tmp_path / "work"
    work.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    ok = work / "ok.txt"
    ok.write_bytes(TEXT)
    vec = work / "vec.txt"
    vec.write_bytes(VECTORS)
    vector_input = command.startswith(("hubness", "vectors", "dim-vectors"))
    good = VECTORS if vector_input else TEXT
    if fault == "full-stdout":
        faulty = work / "good.txt"
        faulty.write_bytes(good if vector_input else good * 40)
    else:
        faulty = _make(fault, work, good)
    out = work / "out.kxv"
    argv = [a.format(F=faulty, OK=ok, VEC=vec, OUT=out) for a in COMMANDS[command]]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    stdout = subprocess.PIPE
    full = None
    if fault == "full-stdout":
        if command == "vectors-convert":
            pytest.skip("vectors convert writes a file, not stdout")
        full = work / "full"
        try:
            os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        except OSError as e:
            pytest.skip(f"cannot make a device node: {e}")
        stdout = open(full, "wb")  # noqa: SIM115 - closed below
    try:
        r = subprocess.run(
            [sys.executable, "-m", "kxtool", *argv],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=300,
        )
    finally:
        if full is not None:
            stdout.close()
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "internal error" not in err, err
    assert os.listdir(tmpdir) == [], os.listdir(tmpdir)
    leftovers = [n for n in os.listdir(work) if n.endswith(".kxtmp")]
    assert leftovers == []
    if fault == "empty" and command in EMPTY_IS_FINE:
        assert r.returncode == 0, err
        return
    assert r.returncode == 1, (r.returncode, err)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("kxtool: error: ")]
    assert len(errors) == 1 and errors == lines[-1:], err
    if fault == "full-stdout":
        assert errors[0] == "kxtool: error: cannot write to stdout: no space left on device"
    else:
        assert str(faulty) in errors[0], err
    if command == "vectors-convert":
        assert not out.exists()
