"""URLs as inputs and outputs (kxtool/textio/remote.py): S3 through a real S3-compatible server
(moto's, started here on 127.0.0.1 and stopped at the end), memory:// for the stores without an
atomic upload, file:// as local paths, and the one-line errors without the remote extra."""

from __future__ import annotations

import doctest
import gzip
import json
import logging
import os
import socket
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import kxtool
from kxtool import shuffle_files
from kxtool.cli import app
from kxtool.errors import KxError
from kxtool.textio import AtomicOutputs, open_input, remote

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

runner = CliRunner()
BUCKET = "kxtool-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 with one bucket; the s3fs file system talking to it."""
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        fs = fsspec.filesystem("s3")
        fs.mkdir(BUCKET)
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path, monkeypatch):
    """Staged outputs and copies go to the test's own $TMPDIR (checked for leftovers)."""
    import tempfile

    stage = tmp_path / "tmp"
    stage.mkdir()
    monkeypatch.setenv("TMPDIR", str(stage))
    monkeypatch.setattr(tempfile, "tempdir", str(stage))
    yield stage


def _lines(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return b"".join(b"record %d %s\n" % (i, b"x" * int(rng.integers(0, 40))) for i in range(n))


def _zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _parts(n: int = 3, records: int = 3000) -> list[bytes]:
    data = _lines(records)
    lines = data.splitlines(keepends=True)
    step = len(lines) // n
    return [b"".join(lines[i * step : (i + 1) * step if i < n - 1 else None]) for i in range(n)]


def _put_parts(fs, prefix: str, parts: list[bytes], tmp_path) -> tuple[list[str], str]:
    """The parts on S3 (plain, .gz, .zst in turn) and the same bytes as local files."""
    local = []
    for i, data in enumerate(parts):
        ext, stored = [
            ("txt", data), ("txt.gz", gzip.compress(data, mtime=0)), ("txt.zst", _zst(data))
        ][i % 3]
        name = f"part-{i:02d}.{ext}"
        fs.pipe(f"{BUCKET}/{prefix}/{name}", stored)
        p = tmp_path / name
        p.write_bytes(stored)
        local.append(str(p))
    return local, f"s3://{BUCKET}/{prefix}/part-*"


def _no_leftovers(fs, stage) -> None:
    keys = fs.find(BUCKET)
    assert not [k for k in keys if k.endswith(".kxtmp")], keys
    assert not [p for p in os.listdir(stage) if p.endswith(".kxtmp") or p.startswith("kxtool-")]


def test_remote_examples_run():
    """The docstring examples of kxtool.textio.remote (the module is not in kxtool.__all__)."""
    result = doctest.testmod(remote, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0


def test_url_recognition():
    assert remote.is_url("s3://b/k") and remote.is_url("simplecache::s3://b/k")
    assert not remote.is_url("C://x") and not remote.is_url("a/b:c") and not remote.is_url("-")
    assert remote.local_path("file:///a/b") == "/a/b"
    with pytest.raises(KxError, match="file:///absolute"):
        remote.local_path("file://relative/x")


@pytest.mark.parametrize(
    "memory,jobs,header", [("64M", 1, 0), ("64K", 1, 1), ("64K", 2, 0), ("64K", 2, 2)]
)
def test_shuffle_s3_parts_to_one_object_is_identical(
    s3, tmp_path, _private_tmp, memory, jobs, header
):
    prefix = f"single-{memory}-{jobs}-{header}"
    local, glob = _put_parts(s3, prefix, _parts(), tmp_path)
    want = tmp_path / "want.txt"
    shuffle_files(local, want, seed=11, memory=memory, jobs=jobs, header=header)
    out = f"s3://{BUCKET}/{prefix}/out/shuffled.txt"
    r = shuffle_files([glob], out, seed=11, memory=memory, jobs=jobs, header=header)
    assert r.outputs == [out]
    assert s3.cat(out) == want.read_bytes()
    _no_leftovers(s3, _private_tmp)


@pytest.mark.parametrize("jobs,suffix", [(1, ".txt"), (2, ".txt"), (2, ".txt.zst")])
def test_shuffle_s3_parts_to_s3_shards_is_identical(s3, tmp_path, _private_tmp, jobs, suffix):
    prefix = f"shards-{jobs}{suffix}"
    local, glob = _put_parts(s3, prefix, _parts(4), tmp_path)
    shuffle_files(
        local, str(tmp_path / ("want-{}" + suffix)), seed=5, memory="64K", jobs=jobs,
        shards=3, header=1,
    )
    pattern = f"s3://{BUCKET}/{prefix}/out/part-{{:03d}}{suffix}"
    r = shuffle_files([glob], pattern, seed=5, memory="64K", jobs=jobs, shards=3, header=1)
    assert r.outputs == [pattern.format(j) for j in range(3)]
    for j in range(3):
        assert s3.cat(pattern.format(j)) == (tmp_path / f"want-{j}{suffix}").read_bytes()
    _no_leftovers(s3, _private_tmp)


def test_cli_shuffle_s3(s3, tmp_path, _private_tmp):
    local, glob = _put_parts(s3, "cli", _parts(), tmp_path)
    want = tmp_path / "want.txt"
    shuffle_files(local, want, seed=3)
    res = runner.invoke(app, ["shuffle", glob, "-o", f"s3://{BUCKET}/cli/out.txt", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert s3.cat(f"{BUCKET}/cli/out.txt") == want.read_bytes()
    # to stdout, and an output replaced
    res = runner.invoke(app, ["shuffle", glob, "--seed", "3"])
    assert res.exit_code == 0 and res.stdout_bytes == want.read_bytes()
    res = runner.invoke(app, ["shuffle", glob, "-o", f"s3://{BUCKET}/cli/out.txt", "--seed", "4"])
    assert res.exit_code == 0 and s3.cat(f"{BUCKET}/cli/out.txt") != want.read_bytes()


def test_cli_shuffle_s3_tmp_dir_stages_there(s3, tmp_path, _private_tmp):
    local, glob = _put_parts(s3, "tmpdir", _parts(), tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    res = runner.invoke(
        app,
        ["shuffle", glob, "-o", f"s3://{BUCKET}/tmpdir/o.txt", "--tmp-dir", str(work),
         "--memory", "64K"],
    )
    assert res.exit_code == 0, res.output
    assert os.listdir(work) == []
    res = runner.invoke(app, ["shuffle", glob, "--tmp-dir", f"s3://{BUCKET}/t"])
    assert res.exit_code == 1 and "must be a local directory" in res.output


def test_errors_name_the_url_in_one_line(s3, tmp_path, _private_tmp):
    missing = f"s3://{BUCKET}/no/such/object.txt"
    for args, expect in [
        (["shuffle", missing], f"cannot open '{missing}': no such file or object"),
        (["shuffle", f"s3://{BUCKET}/no/part-*"], f"no input matches 's3://{BUCKET}/no/part-*'"),
        (["shuffle", "s3://no-such-bucket-kx/x.txt"], "no such bucket"),
        (["shuffle", "-o", "s3://no-such-bucket-kx/out.txt"], "no such bucket 'no-such-bucket-kx'"),
        (["shuffle", "-o", f"s3://{BUCKET}"], "it names a bucket"),
        (["wmd", "--top", "1", str(_write(tmp_path / "q.txt", b"a cat\n")), missing],
         "no such file or object"),
    ]:
        res = runner.invoke(app, args, input="a\n")
        assert res.exit_code == 1, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kxtool: error: "), res.output
        assert expect in lines[0], (expect, lines[0])
    s3.pipe(f"{BUCKET}/dir/inside.txt", b"x\n")
    res = runner.invoke(app, ["shuffle", f"s3://{BUCKET}/dir"])
    assert res.exit_code == 1 and "it is a directory" in res.output
    _no_leftovers(s3, _private_tmp)


def test_nothing_left_behind_on_error(s3, tmp_path, _private_tmp):
    parts = _parts(3)
    s3.pipe(f"{BUCKET}/bad/part-0.txt", parts[0])
    s3.pipe(f"{BUCKET}/bad/part-1.txt.gz", gzip.compress(parts[1])[:-20])  # truncated
    for shards in (None, 2):
        out = f"s3://{BUCKET}/bad/out/o-{{}}.txt" if shards else f"s3://{BUCKET}/bad/out/o.txt"
        with pytest.raises(KxError, match=r"part-1\.txt\.gz.*truncated"):
            shuffle_files([f"s3://{BUCKET}/bad/part-*"], out, memory="64K", shards=shards)
        assert not s3.exists(f"{BUCKET}/bad/out")
    _no_leftovers(s3, _private_tmp)


def test_a_failed_upload_takes_back_the_objects_of_its_set(s3, tmp_path, monkeypatch, _private_tmp):
    s3.pipe(f"{BUCKET}/set/old-1.txt", b"old\n")  # an object that is replaced stays
    real = remote.upload
    calls = []

    def failing(local, url, make_dirs=False):
        calls.append(url)
        if len(calls) == 3:
            raise KxError(f"cannot write {url!r}: simulated failure")
        real(local, url, make_dirs)

    monkeypatch.setattr(remote, "upload", failing)
    with pytest.raises(KxError, match="simulated"):
        shuffle_files(
            [str(_write(tmp_path / "in.txt", _lines(100)))],
            f"s3://{BUCKET}/set/old-{{}}.txt", shards=3,
        )
    assert not s3.exists(f"{BUCKET}/set/old-0.txt")
    assert s3.cat(f"{BUCKET}/set/old-1.txt") != b"old\n"  # replaced before the failure
    _no_leftovers(s3, _private_tmp)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_wmd_corpus_and_vectors_from_s3(s3, tmp_path):
    corpus = "the cat sat on the mat\nthe dog sat on the log\na bird flew over the house\n"
    queries = "a cat on a mat\nthe bird in the house\n"
    s3.pipe(f"{BUCKET}/wmd/corpus.txt.gz", gzip.compress(corpus.encode()))
    s3.pipe(f"{BUCKET}/wmd/queries.txt", queries.encode())
    (tmp_path / "corpus.txt").write_text(corpus)
    (tmp_path / "queries.txt").write_text(queries)
    local = runner.invoke(app, ["wmd", str(tmp_path / "queries.txt"), str(tmp_path / "corpus.txt"),
                                "--top", "2", "--json"])
    url = runner.invoke(app, ["wmd", f"s3://{BUCKET}/wmd/queries.txt",
                              f"s3://{BUCKET}/wmd/corpus.txt.gz", "--top", "2", "--json"])
    assert local.exit_code == 0 and url.exit_code == 0, url.output
    assert local.stdout == url.stdout
    # vectors from a URL (a local copy is read)
    vec = "4 3\nthe 0.1 0.2 0.3\ncat 0.5 0.1 0.2\nsat 0.3 0.3 0.1\nmat 0.2 0.4 0.1\n"
    s3.pipe(f"{BUCKET}/wmd/tiny.vec", vec.encode())
    (tmp_path / "tiny.vec").write_text(vec)
    args = ["wmd", "--text", "the cat sat", "the mat", "--vectors"]
    a = runner.invoke(app, [*args, str(tmp_path / "tiny.vec")])
    b = runner.invoke(app, [*args, f"s3://{BUCKET}/wmd/tiny.vec"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.stdout == b.stdout


def test_vectors_convert_to_and_from_s3_and_hubness_npy(s3, tmp_path, _private_tmp):
    vec = "3 2\nthe 0.1 0.2\ncat 0.5 0.1\nsat 0.3 0.3\n"
    s3.pipe(f"{BUCKET}/vec/tiny.vec", vec.encode())
    from kxtool.vectors import convert_vectors

    v = convert_vectors(f"s3://{BUCKET}/vec/tiny.vec", f"s3://{BUCKET}/vec/tiny.kxv")
    assert v.words == ["the", "cat", "sat"]
    back = kxtool.load_vectors(f"s3://{BUCKET}/vec/tiny.kxv")
    assert back.words == v.words and np.allclose(back.matrix, v.matrix)
    assert back.source == f"s3://{BUCKET}/vec/tiny.kxv"
    res = runner.invoke(
        app, ["vectors", "convert", f"s3://{BUCKET}/vec/tiny.vec", f"s3://{BUCKET}/vec/c.kxv",
              "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bytes"] == s3.size(f"{BUCKET}/vec/c.kxv") > 0
    res = runner.invoke(app, ["dim", "--vectors", f"s3://{BUCKET}/vec/c.kxv", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["vocab"] == 3, res.output
    m = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    np.save(tmp_path / "m.npy", m)
    s3.put_file(str(tmp_path / "m.npy"), f"{BUCKET}/vec/m.npy")
    a = runner.invoke(app, ["hubness", str(tmp_path / "m.npy"), "-k", "3", "--json"])
    b = runner.invoke(app, ["hubness", f"s3://{BUCKET}/vec/m.npy", "-k", "3", "--json",
                            "--neighbors", f"s3://{BUCKET}/vec/nn.tsv"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["measures"] == pytest.approx(jb["measures"])
    assert s3.cat(f"{BUCKET}/vec/nn.tsv")
    _no_leftovers(s3, _private_tmp)


def test_dim_corpus_from_s3(s3, tmp_path):
    text = "".join(f"word{i % 50} word{i % 7} other{i % 13}\n" for i in range(300))
    s3.pipe(f"{BUCKET}/dim/c.txt.zst", _zst(text.encode()))
    (tmp_path / "c.txt").write_text(text)
    a = runner.invoke(app, ["dim", "--corpus", str(tmp_path / "c.txt"), "--json"])
    b = runner.invoke(app, ["dim", "--corpus", f"s3://{BUCKET}/dim/c.txt.zst", "--json"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ra, rb = json.loads(a.stdout)["results"][0], json.loads(b.stdout)["results"][0]
    assert ra["estimates"] == rb["estimates"] and ra["tokens"] == rb["tokens"] == 900


def test_memory_store_goes_through_a_temporary_key(tmp_path, monkeypatch, _private_tmp):
    fs = fsspec.filesystem("memory")
    moved = []
    real_mv = type(fs).mv

    def mv(self, a, b, **kw):
        moved.append((a, b))
        return real_mv(self, a, b, **kw)

    monkeypatch.setattr(type(fs), "mv", mv)
    src = _write(tmp_path / "in.txt", _lines(200))
    shuffle_files([str(src)], "memory://kxtest/sub/out.txt", seed=1)
    shuffle_files([str(src)], tmp_path / "want.txt", seed=1)
    assert fs.cat("/kxtest/sub/out.txt") == (tmp_path / "want.txt").read_bytes()
    (a, b), = moved
    assert a.endswith(".kxtmp") and "/.out.txt." in a and b == "/kxtest/sub/out.txt"

    def broken(self, a, b, **kw):
        raise OSError(5, "simulated move failure")

    monkeypatch.setattr(type(fs), "mv", broken)
    with pytest.raises(KxError, match="cannot write 'memory://kxtest/sub/again.txt'"):
        shuffle_files([str(src)], "memory://kxtest/sub/again.txt", seed=1)
    assert fs.ls("/kxtest/sub", detail=False) == ["/kxtest/sub/out.txt"]
    assert os.listdir(_private_tmp) == []


def test_file_urls_are_local_paths(tmp_path):
    for i in range(2):
        _write(tmp_path / f"p-{i}.txt", _lines(50, seed=i))
    r = shuffle_files([f"file://{tmp_path}/p-*.txt"], f"file://{tmp_path}/out.txt", seed=2)
    shuffle_files([str(tmp_path / "p-0.txt"), str(tmp_path / "p-1.txt")], tmp_path / "w", seed=2)
    assert (tmp_path / "out.txt").read_bytes() == (tmp_path / "w").read_bytes()
    assert r.outputs == [str(tmp_path / "out.txt")]
    with open_input(f"file://{tmp_path}/p-0.txt") as f:
        assert f.read() == _lines(50, seed=0)


@pytest.mark.parametrize("hidden", ["fsspec", "s3fs"])
def test_without_the_extra_a_url_is_one_line_naming_it(monkeypatch, hidden):
    monkeypatch.setitem(sys.modules, hidden, None)  # import fails as if not installed
    if hidden == "s3fs":
        # fsspec stays; the S3 driver class it had imported is forgotten
        import types

        reg = sys.modules["fsspec.registry"]
        fresh: dict = {}
        monkeypatch.setattr(reg, "_registry", fresh)
        monkeypatch.setattr(reg, "registry", types.MappingProxyType(fresh))
    for args in (
        ["shuffle", "s3://kx/part-*.zst"],
        ["shuffle", "-o", "s3://kx/out.txt"],
        ["wmd", "--top", "1", "s3://kx/q.txt", "s3://kx/c.txt"],
    ):
        res = runner.invoke(app, args, input="a\n")
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and "pip install 'kxtool[remote]'" in lines[0], res.output
    if hidden == "fsspec":  # file:// needs nothing
        with pytest.raises(KxError, match="No such file"):
            with open_input("file:///nonexistent/kx.txt"):
                pass
    AtomicOutputs().discard()


def test_kxtool_s3_endpoint_names_the_server(s3, monkeypatch):
    import s3fs

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3.pipe(f"{BUCKET}/endpoint/x.txt", b"b\na\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("KXTOOL_S3_ENDPOINT", endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with open_input(f"s3://{BUCKET}/endpoint/x.txt") as f:
            assert f.read() == b"b\na\n"
        fs, _ = remote.filesystem(f"s3://{BUCKET}/endpoint/x.txt")
        assert fs.client_kwargs.get("endpoint_url") == endpoint or fs.endpoint_url == endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_ctrl_c_leaves_nothing(s3, tmp_path, _private_tmp):
    local, glob = _put_parts(s3, "ctrlc", _parts(), tmp_path)
    seen = []

    def interrupt(phase, done, total):
        seen.append(phase)
        if phase == "writing":
            raise KeyboardInterrupt

    for shards in (None, 3):
        out = f"s3://{BUCKET}/ctrlc/out/{{}}.txt" if shards else f"s3://{BUCKET}/ctrlc/out/o.txt"
        with pytest.raises(KeyboardInterrupt):
            shuffle_files([glob], out, memory="64K", shards=shards, progress=interrupt)
        assert not s3.exists(f"{BUCKET}/ctrlc/out")
    assert "writing" in seen
    _no_leftovers(s3, _private_tmp)


def test_hubness_sample_writes_a_url(s3, tmp_path, _private_tmp):
    args = ["hubness", "sample", "--dim", "8", "--count", "20", "--min-occurrence", "1",
            "--seed", "3"]
    a = runner.invoke(app, [*args, "-o", str(tmp_path / "z.npy")])
    b = runner.invoke(app, [*args, "-o", f"s3://{BUCKET}/sample/z.npy"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert s3.cat(f"{BUCKET}/sample/z.npy") == (tmp_path / "z.npy").read_bytes()
    _no_leftovers(s3, _private_tmp)


def test_cluster_shuffle_from_s3_parts_to_s3_is_identical(s3, tmp_path, _private_tmp):
    """The issue's route: parts on S3, the shuffle as tasks on a cluster, the output on S3.
    The cluster starts here, after the S3 settings are in the environment its workers get."""
    pytest.importorskip("distributed")
    from kxtool.cluster import connect

    local, glob = _put_parts(s3, "cluster", _parts(4), tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    want = tmp_path / "want-{}.txt"
    shuffle_files(local, str(want), seed=9, memory="64K", jobs=1, shards=2, header=1)
    pattern = f"s3://{BUCKET}/cluster/out/part-{{}}.txt"
    with connect("local:1") as cl:
        cl.client.wait_for_workers(1, timeout=60)
        r = shuffle_files([glob], pattern, seed=9, memory="64K", shards=2, header=1,
                          cluster=cl, tmp_dir=shared)
    assert r.outputs == [pattern.format(j) for j in range(2)]
    for j in range(2):
        assert s3.cat(pattern.format(j)) == (tmp_path / f"want-{j}.txt").read_bytes()
    assert os.listdir(shared) == []
    _no_leftovers(s3, _private_tmp)
