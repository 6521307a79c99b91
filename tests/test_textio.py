"""kxtool.textio: what an output name stands for decides how it is written, and inputs are
read, or refused, by their content.

Devices, FIFOs and links are all made inside the test's temporary directory: no test opens a
real path under /dev for writing (as root that could destroy a device).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

from kxtool.errors import KxError
from kxtool.textio import AtomicOutputs, atomic_output, open_input, read_blocks

LINES = b"".join(b"line %d\n" % i for i in range(2000))


def kx(*args: str, **kw):
    return subprocess.run(
        [sys.executable, "-m", "kxtool", *args], capture_output=True, timeout=120, **kw
    )


def _char_device(path, major: int, minor: int) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")


@pytest.fixture
def null_device(tmp_path):
    p = tmp_path / "null"
    _char_device(p, 1, 3)
    return p


@pytest.fixture
def full_device(tmp_path):
    p = tmp_path / "full"
    _char_device(p, 1, 7)
    return p


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes(LINES)
    return p


def _fifo_reader(fifo):
    """Make a FIFO and read it to its end in a thread: (the list it appends to, the thread)."""
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader():
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=reader)
    t.start()
    return got, t


def _is_chr(p) -> bool:
    return stat.S_ISCHR(os.lstat(p).st_mode)


# ---- the library: AtomicOutputs ---------------------------------------------------------


def test_a_device_is_written_through_never_replaced(null_device):
    with atomic_output(null_device) as f:
        f.write(b"x" * 100000)
    assert _is_chr(null_device)
    assert os.listdir(null_device.parent) == ["null"]


def test_a_full_device_is_a_no_space_error(full_device):
    with pytest.raises(KxError, match="no space left on device"):
        with atomic_output(full_device) as f:
            f.write(b"x" * (2 << 20))
    assert _is_chr(full_device)


def test_a_fifo_is_written_through_to_its_reader(tmp_path):
    fifo = tmp_path / "fifo"
    got, t = _fifo_reader(fifo)
    with atomic_output(fifo) as f:
        f.write(LINES)
    t.join(10)
    assert got == [LINES]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_bytes(b"old\n")
    link = tmp_path / "link.txt"
    link.symlink_to("real.txt")
    with atomic_output(link) as f:
        f.write(b"new\n")
    assert os.path.islink(link) and os.readlink(link) == "real.txt"
    assert real.read_bytes() == b"new\n"


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to("made.txt")
    with atomic_output(link) as f:
        f.write(b"new\n")
    assert os.path.islink(link)
    assert (tmp_path / "made.txt").read_bytes() == b"new\n"


def test_a_replaced_file_keeps_its_mode_and_owner(tmp_path):
    p = tmp_path / "out.txt"
    p.write_bytes(b"old\n")
    os.chmod(p, 0o640)
    owner = None
    if os.geteuid() == 0:
        os.chown(p, 12345, 23456)
        owner = (12345, 23456)
    with atomic_output(p) as f:
        f.write(b"new\n")
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o640
    if owner:
        assert (st.st_uid, st.st_gid) == owner
    assert p.read_bytes() == b"new\n"


def test_a_hard_linked_file_is_rewritten_in_place_for_every_link(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"old contents that are longer\n")
    os.link(a, b)
    inode = os.stat(a).st_ino
    with atomic_output(a) as f:
        f.write(b"new\n")
    assert b.read_bytes() == b"new\n" and a.read_bytes() == b"new\n"
    assert os.stat(a).st_ino == inode and os.stat(a).st_nlink == 2
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


def test_an_error_leaves_the_target_and_no_temporary(tmp_path):
    p = tmp_path / "out.txt"
    p.write_bytes(b"old\n")
    with pytest.raises(RuntimeError):
        with atomic_output(p) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_missing_directories_are_made_only_when_asked_and_removed_on_error(tmp_path):
    deep = tmp_path / "a" / "b" / "out.txt"
    with pytest.raises(KxError, match="does not exist"):
        with atomic_output(deep):
            pass
    with pytest.raises(RuntimeError):
        with AtomicOutputs(make_dirs=True) as outs:
            outs.open(deep).write(b"x")
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
    with AtomicOutputs(make_dirs=True) as outs:
        outs.open(deep).write(b"x")
    assert deep.read_bytes() == b"x"


def test_a_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        with pytest.raises(KxError, match="socket"):
            with atomic_output(path):
                pass
    finally:
        s.close()


def test_a_descriptor_link_is_written_through(tmp_path):
    """A name such as /dev/stdout (a link to /proc/self/fd/1) stands for the descriptor: the
    bytes go to whatever it is open on, and the link stays."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    code = (
        "import sys; from kxtool.textio import atomic_output\n"
        f"with atomic_output({str(link)!r}) as f: f.write(b'through\\n')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"through\n"
    assert os.path.islink(link)


# ---- every writer of the CLI --------------------------------------------------------------


def _vectors_file(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "vec.txt"
    rows = [f"w{i} " + " ".join(f"{x:.4f}" for x in rng.normal(size=8)) for i in range(60)]
    p.write_text("\n".join(rows) + "\n")
    return p


WRITERS = ["shuffle -o", "hubness --neighbors", "hubness sample -o", "vectors convert"]


def _writers(tmp_path, src, target):
    vec = _vectors_file(tmp_path)
    return {
        "shuffle -o": ["shuffle", str(src), "-o", str(target)],
        "hubness --neighbors": ["hubness", str(vec), "-k", "3", "--neighbors", str(target)],
        "vectors convert": ["vectors", "convert", str(vec), str(target)],
        "hubness sample -o": [
            "hubness", "sample", "--dim", "4", "--count", "5", "--min-occurrence", "1",
            "--batch-size", "50", "-o", str(target),
        ],
    }


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_writes_through_a_device(tmp_path, src, null_device, writer):
    r = kx(*_writers(tmp_path, src, null_device)[writer])
    assert r.returncode == 0, r.stderr
    assert _is_chr(null_device)


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_reports_a_full_device(tmp_path, src, full_device, writer):
    r = kx(*_writers(tmp_path, src, full_device)[writer])
    assert r.returncode == 1
    assert r.stderr.decode().strip().endswith("no space left on device"), r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1
    assert _is_chr(full_device)


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_follows_a_symlink(tmp_path, src, writer):
    real = tmp_path / "real.npy"
    real.write_bytes(b"old\n")
    link = tmp_path / "link.npy"
    link.symlink_to("real.npy")
    r = kx(*_writers(tmp_path, src, link)[writer])
    assert r.returncode == 0, r.stderr
    assert os.path.islink(link)
    assert real.read_bytes() != b"old\n"


def test_shuffle_into_a_fifo_with_workers_and_a_big_input(tmp_path):
    """Two passes with workers, whose pass 2 writes a plain file by offsets, must write a
    FIFO in order instead."""
    big = tmp_path / "big.txt"
    big.write_bytes(b"".join(b"%08d\n" % i for i in range(300000)))
    fifo = tmp_path / "fifo"
    got, t = _fifo_reader(fifo)
    r = kx("shuffle", str(big), "--memory", "1M", "-j", "2", "--seed", "3", "-o", str(fifo))
    t.join(60)
    assert r.returncode == 0, r.stderr
    ref = kx("shuffle", str(big), "--memory", "1M", "-j", "2", "--seed", "3")
    assert got == [ref.stdout]
    assert sorted(got[0].splitlines()) == big.read_bytes().splitlines()


def test_shard_directories_are_created(tmp_path, src):
    r = kx("shuffle", str(src), "--shards", "3", "-o", str(tmp_path / "out" / "p-{}.txt"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["p-0.txt", "p-1.txt", "p-2.txt"]


def test_stdout_full_is_a_named_error(tmp_path, src, full_device):
    json_dim = ["dim", "--vocab", "9", "--json"]
    commands = (["shuffle", str(src)], ["dim", "--vocab", "1000"], json_dim)
    for args in commands:
        with open(full_device, "wb") as out:
            r = subprocess.run(
                [sys.executable, "-m", "kxtool", *args], stdout=out, stderr=subprocess.PIPE
            )
        assert r.returncode == 1, args
        assert r.stderr.decode() == (
            "kxtool: error: cannot write to stdout: no space left on device\n"
        ), args


# ---- reading ------------------------------------------------------------------------------


def _compressed(kind: str, data: bytes) -> bytes:
    return {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](data)


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_corrupt_and_truncated_compressed_inputs_are_named_errors(tmp_path, kind):
    data = LINES * 50
    blob = _compressed(kind, data)
    bad = bytearray(blob)
    for i in range(len(bad) // 3, len(bad) // 3 + 40):
        bad[i] ^= 0x5A
    corrupt = tmp_path / f"corrupt.{kind}"
    corrupt.write_bytes(bytes(bad))
    truncated = tmp_path / f"truncated.{kind}"
    truncated.write_bytes(blob[: len(blob) // 2])
    for p in (corrupt, truncated):
        with pytest.raises(KxError, match=f"cannot read '{p}'"):
            b"".join(read_blocks(p))
        with pytest.raises(KxError, match=f"cannot read '{p}'"), open_input(p) as f:
            for _line in f:
                pass


@pytest.mark.parametrize(
    "head",
    [
        b"\x04\x22\x4d\x18\x64\x40",  # lz4
        b"PK\x03\x04\x14\x00",  # zip
        b"7z\xbc\xaf\x27\x1c\x00\x04",  # 7z
        b"Rar!\x1a\x07\x00",  # rar
        b"\x93NUMPY\x01\x00",  # .npy
        b"\x1f\x9d\x90",  # compress
        b"LZIP\x01",  # lzip
    ],
)
def test_formats_kxtool_does_not_read_are_refused(tmp_path, head):
    p = tmp_path / "data.bin"
    p.write_bytes(head + b"\x00" * 600)
    with pytest.raises(KxError, match="which kxtool does not read"), open_input(p):
        pass


def test_a_tar_archive_is_refused(tmp_path):
    import tarfile

    member = tmp_path / "member.txt"
    member.write_bytes(LINES)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        t.add(member, arcname="member.txt")
    with pytest.raises(KxError, match="tar archive"), open_input(archive):
        pass


def test_text_that_starts_like_a_magic_is_still_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"PKzip is a word\nBZh9 too\n")
    with open_input(p) as f:
        assert f.read() == b"PKzip is a word\nBZh9 too\n"


# ---- zstd ---------------------------------------------------------------------------------

zstandard = pytest.importorskip("zstandard")


def _zst(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def _skippable(payload: bytes) -> bytes:
    return (0x184D2A5A).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


@pytest.mark.parametrize(
    "blob,want",
    [
        (_zst(LINES), LINES),
        (_zst(b""), b""),
        (_zst(LINES[:999]) + _zst(LINES[999:], write_checksum=True), LINES),  # many frames
        (b"".join(_zst(LINES[i : i + 100]) for i in range(0, len(LINES), 100)), LINES),
        (_skippable(b"meta") + _zst(LINES) + _skippable(b"x" * 10), LINES),
        (_zst(LINES * 200, level=1), LINES * 200),
    ],
    ids=["one-frame", "empty", "two-frames", "concatenated", "skippable", "big"],
)
def test_zstd_inputs_are_read(tmp_path, blob, want):
    p = tmp_path / "data.zst"
    p.write_bytes(blob)
    assert b"".join(read_blocks(p, 1 << 16)) == want
    with open_input(p) as f:
        assert list(f) == want.splitlines(keepends=True)


def test_zstd_streamed_frames_with_unknown_size(tmp_path):
    import io

    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:
        for i in range(0, len(LINES), 777):
            w.write(LINES[i : i + 777])
    p = tmp_path / "s.zst"
    p.write_bytes(buf.getvalue())
    assert b"".join(read_blocks(p)) == LINES


def test_corrupt_and_truncated_zstd_are_named_errors(tmp_path):
    blob = _zst(LINES * 20, write_checksum=True)
    truncated = tmp_path / "t.zst"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(KxError, match=r"cannot read '.*t\.zst': truncated zstd data"):
        b"".join(read_blocks(truncated))
    bad = bytearray(blob)
    for i in range(len(bad) // 2, len(bad) // 2 + 16):
        bad[i] ^= 0xA5
    corrupt = tmp_path / "c.zst"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(KxError, match=r"cannot read '.*c\.zst': corrupt zstd data"):
        b"".join(read_blocks(corrupt))


def test_zst_output_is_written_compressed_and_read_back_by_another_decoder(tmp_path, src):
    out = tmp_path / "out.txt.zst"
    r = kx("shuffle", str(src), "--seed", "4", "-o", str(out))
    assert r.returncode == 0, r.stderr
    plain = kx("shuffle", str(src), "--seed", "4").stdout
    blob = out.read_bytes()
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    import shutil

    if shutil.which("zstd"):
        got = subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True).stdout
    else:
        got = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert got == plain


def test_shuffle_of_zst_parts_equals_shuffle_of_the_plain_text(tmp_path):
    lines = LINES.splitlines(keepends=True) * 20
    parts = []
    for j in range(4):
        p = tmp_path / f"part-{j}.jsonl.zst"
        p.write_bytes(_zst(b"".join(lines[j * 10000 : (j + 1) * 10000])))
        parts.append(str(p))
    whole = tmp_path / "whole.txt"
    whole.write_bytes(b"".join(lines))
    a = kx("shuffle", *parts, "--seed", "9", "--memory", "1M", "-j", "2")
    b = kx("shuffle", str(whole), "--seed", "9", "--memory", "1M", "-j", "2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert sorted(a.stdout.splitlines(keepends=True)) == sorted(lines)


def test_vectors_convert_keeps_a_replaced_file_s_mode_and_hard_links(tmp_path):
    vec = _vectors_file(tmp_path)
    a, b = tmp_path / "a.kxv", tmp_path / "b.kxv"
    a.write_bytes(b"old")
    os.chmod(a, 0o640)
    os.link(a, b)
    r = kx("vectors", "convert", str(vec), str(a))
    assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:8] == b"KXVECS\x00\x01"
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o640 and os.stat(a).st_nlink == 2


def test_vectors_convert_into_a_fifo_streams_the_whole_file(tmp_path):
    vec = _vectors_file(tmp_path)
    ref = tmp_path / "ref.kxv"
    assert kx("vectors", "convert", str(vec), str(ref)).returncode == 0
    fifo = tmp_path / "fifo"
    got, t = _fifo_reader(fifo)
    r = kx("vectors", "convert", str(vec), str(fifo))
    t.join(30)
    assert r.returncode == 0, r.stderr
    assert got == [ref.read_bytes()]
