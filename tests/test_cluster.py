"""kxtool on a Dask cluster: a LocalCluster of 2 worker processes on 127.0.0.1, started once
for the module and closed at its end. Every result is compared with the local run."""

from __future__ import annotations

import builtins
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from kxtool.errors import KxError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    from kxtool.cluster import connect

    with connect("local:2") as c:
        c.client.wait_for_workers(2, timeout=60)
        yield c


# -- the executor --------------------------------------------------------------------------------


def _times(ctx, x):
    if x == 7:
        raise KxError(f"line {x} of 'a.txt' is bad")
    return ctx["m"] * x


def test_executor_order_context_and_errors(cluster):
    from kxtool import parallel

    with parallel.executor(4, {"m": 3}, cluster=cluster) as ex:
        assert ex.jobs == 2
        assert list(ex.map(_times, range(7))) == [3 * i for i in range(7)]
        with pytest.raises(KxError) as e:
            list(ex.map(_times, range(20)))
        assert e.value.message == "line 7 of 'a.txt' is bad"
        # an abandoned map cancels what it submitted; the executor still works
        it = ex.map(_times, range(100), window=8)
        assert next(it) == 0
        it.close()
        assert list(ex.map(_times, [1, 2])) == [3, 6]


def test_missing_extra_is_one_line(monkeypatch):
    from kxtool.cluster import connect

    real = builtins.__import__

    def hide(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed.") or name == "dask":
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", hide)
    monkeypatch.delitem(sys.modules, "distributed", raising=False)
    with pytest.raises(KxError) as e:
        connect("local:2")
    assert "kxtool[cluster]" in e.value.message and "\n" not in e.value.message


def test_missing_extra_cli(tmp_path):
    """The command line, with the modules hidden: one line naming the extra, exit 1."""
    f = tmp_path / "a.txt"
    f.write_text("the cat\na dog\n")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "distributed.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(hide))
    out = subprocess.run(
        [sys.executable, "-m", "kxtool", "wmd", "--top", "1", str(f), str(f), "--cluster",
         "local:2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "kxtool[cluster]" in lines[0], out.stderr


def test_bad_local_address():
    from kxtool.cluster import connect

    with pytest.raises(KxError, match="local:N needs N"):
        connect("local:x")


# -- wmd ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def texts():
    from kxtool.vectors import default_vectors

    v = default_vectors()
    rng = random.Random(0)
    words = list(v.words[:2000])
    out = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(160)]
    return v, out + out[:15] + ["zzqx qqzv", ""]  # duplicates (ties) and texts without words


@pytest.mark.parametrize("metric", ["wmd", "wrd"])
def test_wmd_top_identical(cluster, texts, metric):
    from kxtool.wmd import wmd_search

    v, t = texts
    local = wmd_search(t[:40], t, v, k=5, metric=metric)
    remote = wmd_search(t[:40], t, v, k=5, metric=metric, cluster=cluster)
    assert remote == local
    self_local = wmd_search(t, None, v, k=3, exclude_self=True)
    assert wmd_search(t, None, v, k=3, exclude_self=True, cluster=cluster) == self_local


@pytest.mark.parametrize("weights", ["idf", "sif"])
def test_wmd_with_word_weights_identical(cluster, texts, weights):
    from kxtool.wmd import wmd_cross, wmd_pairs, wmd_search

    v, t = texts
    for metric in ("wmd", "wrd"):
        local = wmd_search(t[:30], t, v, k=5, metric=metric, weights=weights)
        assert wmd_search(t[:30], t, v, k=5, metric=metric, weights=weights,
                          cluster=cluster) == local
    a = wmd_cross(t[:15], t[150:], v, weights=weights)
    b = wmd_cross(t[:15], t[150:], v, weights=weights, cluster=cluster)
    assert np.array_equal(a, b, equal_nan=True)
    p = list(wmd_pairs(t[:60], t[60:120], v, weights=weights))
    q = list(wmd_pairs(t[:60], t[60:120], v, weights=weights, cluster=cluster, chunk_size=16))
    assert np.array_equal(p, q, equal_nan=True)
    assert not np.array_equal(p, list(wmd_pairs(t[:60], t[60:120], v)), equal_nan=True)


def test_wmd_cross_and_pairs_identical(cluster, texts):
    from kxtool.wmd import wmd_cross, wmd_pairs

    v, t = texts
    for metric in ("wmd", "wcd", "sinkhorn"):
        a = wmd_cross(t[:20], t[150:], v, metric=metric)
        b = wmd_cross(t[:20], t[150:], v, metric=metric, cluster=cluster)
        assert np.array_equal(a, b, equal_nan=True), metric
    p = list(wmd_pairs(t[:80], t[80:160], v))
    q = list(wmd_pairs(t[:80], t[80:160], v, cluster=cluster, chunk_size=16))
    assert np.array_equal(p, q, equal_nan=True)


def test_wmd_workers_get_only_used_rows(texts):
    from kxtool.wmd.space import DocSpace, pack_space

    v, t = texts
    sp = DocSpace(v)
    docs = sp.docs(t[:10])
    small, (packed,) = pack_space(sp, docs)
    used = {int(r) for d in docs for r in d.rows}
    assert len(small.table) == len(used) < len(v)
    assert small.vectors.dim == v.dim and small.index is None
    for d, p in zip(docs, packed, strict=True):
        assert np.array_equal(small.table[p.rows], sp.table[d.rows])


def test_wmd_cli_cluster_env(tmp_path, texts):
    from typer.testing import CliRunner

    from kxtool.cli import app

    _, t = texts
    f = tmp_path / "c.txt"
    f.write_text("\n".join(t[:30]) + "\n")
    runner = CliRunner()
    local = runner.invoke(app, ["wmd", "--top", "3", str(f), str(f)])
    remote = runner.invoke(app, ["wmd", "--top", "3", str(f), str(f)],
                           env={"KXTOOL_CLUSTER": "local:1"})
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout


# -- hubness / knn ---------------------------------------------------------------------------------


def test_knn_and_hubness_identical(cluster):
    from kxtool.hubness import hubness_report
    from kxtool.knn import topk

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 40)).astype(np.float32)
    x[600:620] = x[:20]  # exact ties
    for metric in ("cosine", "euclidean"):
        a = topk(x, k=10, metric=metric, memory=1 << 18)
        b = topk(x, k=10, metric=metric, memory=1 << 18, cluster=cluster)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    q = x[:50] + 0.01
    a = topk(q, x, k=5, metric="ip", memory=1 << 16)
    b = topk(q, x, k=5, metric="ip", memory=1 << 16, cluster=cluster)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    r1 = hubness_report(x, k=10, reduce="mp", memory=1 << 18)
    r2 = hubness_report(x, k=10, reduce="mp", memory=1 << 18, cluster=cluster)
    assert r1.measures == r2.measures
    assert r1.reduced_measures == r2.reduced_measures
    assert np.array_equal(r1.reduced_indices, r2.reduced_indices)


def test_hubness_cli_cluster(tmp_path):
    from typer.testing import CliRunner

    from kxtool.cli import app

    x = np.random.default_rng(1).normal(size=(400, 20)).astype(np.float32)
    f = tmp_path / "x.npy"
    np.save(f, x)
    runner = CliRunner()
    a = runner.invoke(app, ["hubness", str(f), "-k", "5", "--json", "--memory", "64K"])
    b = runner.invoke(app, ["hubness", str(f), "-k", "5", "--json", "--memory", "64K",
                            "--cluster", "local:1"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.stdout == b.stdout


# -- shuffle --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three plain inputs (the last without a final newline) and a gzip and a zstd copy."""
    import gzip

    import zstandard

    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    plain = []
    for i in range(3):
        lines = ["x" * rng.randint(0, 30) + f" {i} {j}" for j in range(12000)]
        p = d / f"in{i}.txt"
        p.write_text("\n".join(lines) + ("" if i == 2 else "\n"))
        plain.append(str(p))
    gz = d / "in1.txt.gz"
    gz.write_bytes(gzip.compress(open(plain[1], "rb").read()))
    zst = d / "in2.txt.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(open(plain[2], "rb").read()))
    return plain, str(gz), str(zst)


def _same(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


def _shuffle_both(tmp_path, cluster, inputs, name, *, memory="1M", task_bytes=1 << 15,
                  pile_bits=None, **kw):
    from kxtool.shuffle import shuffle_files
    from kxtool.shuffle.cluster import shuffle_on_cluster

    local = str(tmp_path / f"local-{name}")
    remote = str(tmp_path / f"remote-{name}")
    shards = kw.get("shards")
    zero = kw.pop("zero_terminated", False)
    shuffle_files(inputs, local, memory=memory, seed=11, zero_terminated=zero, **kw)
    tmp = tmp_path / f"tmp-{name}"
    tmp.mkdir()
    from kxtool.textio import parse_size

    res = shuffle_on_cluster(
        inputs, remote, parse_size(memory), 11, str(tmp), shards, kw.get("header", 0),
        b"\0" if zero else b"\n", cluster, None, pile_bits, task_bytes,
    )
    names = [(local.format(j), remote.format(j)) for j in range(shards or 1)]
    assert all(_same(a, b) for a, b in names), name
    assert os.listdir(tmp) == []
    return res


def test_shuffle_plain_identical(cluster, corpus, tmp_path):
    plain, _, _ = corpus
    res = _shuffle_both(tmp_path, cluster, plain, "plain.txt")
    assert res.records == 36000 and res.runs > 4
    _shuffle_both(tmp_path, cluster, plain, "header.txt", header=3)
    _shuffle_both(tmp_path, cluster, plain, "shards-{}.txt", shards=3, header=1)
    # a compressed output and a big budget (few piles, one task)
    _shuffle_both(tmp_path, cluster, plain, "out.txt.gz", memory="64M")
    # pass-2 tasks of many piles, read in batches (two reads per run and batch)
    res = _shuffle_both(tmp_path, cluster, plain, "batched.txt", memory="4M", task_bytes=None,
                        pile_bits=8)
    assert res.piles == 256


def test_shuffle_compressed_parts_identical(cluster, corpus, tmp_path):
    plain, gz, zst = corpus
    _shuffle_both(tmp_path, cluster, [plain[0], gz, zst], "mixed.txt", header=2)
    _shuffle_both(tmp_path, cluster, [zst, gz], "parts-{}.txt", shards=2, header=1)


def test_shuffle_zero_terminated_and_cli(cluster, tmp_path):
    from typer.testing import CliRunner

    from kxtool.cli import app

    src = tmp_path / "z.bin"
    src.write_bytes(b"".join(f"rec {i}\nwith newline\0".encode() for i in range(5000)))
    _shuffle_both(tmp_path, cluster, [str(src)], "z.out", zero_terminated=True)
    txt = tmp_path / "lines.txt"
    txt.write_text("".join(f"{i}\n" for i in range(3000)))
    runner = CliRunner()
    a = runner.invoke(app, ["shuffle", str(txt), "--seed", "4"])
    b = runner.invoke(app, ["shuffle", str(txt), "--seed", "4", "--cluster", "local:1",
                            "-T", str(tmp_path)])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.stdout == b.stdout


def test_shuffle_error_in_task_is_one_line(cluster, tmp_path):
    from kxtool.shuffle import shuffle_files

    src = tmp_path / "long.txt"
    src.write_bytes(b"short\n" * 10 + b"y" * 5000 + b"\n" + b"short\n" * 10)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with pytest.raises(KxError) as e:
        shuffle_files([str(src)], str(tmp_path / "o.txt"), memory="16K", cluster=cluster,
                      tmp_dir=str(tmp))
    assert "line 11 of" in e.value.message and "raise --memory" in e.value.message
    assert os.listdir(tmp) == [] and not (tmp_path / "o.txt").exists()


def test_shuffle_ctrl_c_cancels_and_cleans(cluster, corpus, tmp_path):
    """Ctrl-C during pass 1 (raised here by the progress callback): the pending tasks are
    cancelled, the temporary directory and the output's temporary file are removed."""
    import time

    from kxtool.shuffle import shuffle_files

    plain, _, _ = corpus
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    client = cluster.client
    client.run(_set_delay, 0.05)

    def progress(phase, done, total):
        if phase == "reading":
            raise KeyboardInterrupt

    out = tmp_path / "o.txt"
    try:
        with pytest.raises(KeyboardInterrupt):
            from kxtool.shuffle.cluster import shuffle_on_cluster

            shuffle_on_cluster(plain, str(out), 1 << 20, 1, str(tmp), None, 0, b"\n",
                               cluster, progress, None, 1 << 15)
        assert os.listdir(tmp) == [] and os.listdir(tmp_path) == sorted(["tmp"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(client.processing().values()):
            time.sleep(0.05)
        assert not any(client.processing().values())
    finally:
        client.run(_set_delay, 0.0)
    assert os.listdir(tmp) == []
    # the cluster still works afterwards
    shuffle_files(plain[:1], str(out), cluster=cluster, tmp_dir=str(tmp))
    assert sorted(open(out, "rb").read().split()) == sorted(open(plain[0], "rb").read().split())


def _set_delay(seconds):
    import kxtool.shuffle.cluster as sc

    sc._DELAY = seconds
    return os.getpid()


def test_shuffle_worker_killed_in_pass1(cluster, corpus, tmp_path):
    """A worker process killed mid-pass-1 (its nanny starts a new one): Dask runs its task
    again; the output is identical and complete and no temporary pile is left."""
    import signal
    import threading
    import time

    from kxtool.shuffle import shuffle_files
    from kxtool.shuffle.cluster import shuffle_on_cluster

    plain, gz, _ = corpus
    inputs = [plain[0], gz, plain[2]]
    local = tmp_path / "local.txt"
    shuffle_files(inputs, str(local), memory="1M", seed=3, header=1)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    client = cluster.client
    pids = client.run(_set_delay, 0.2)
    out = tmp_path / "remote.txt"
    box = {}

    def run():
        try:
            box["r"] = shuffle_on_cluster(inputs, str(out), 1 << 20, 3, str(tmp), None, 1,
                                          b"\n", cluster, None, None, 1 << 15)
        except BaseException as e:  # noqa: BLE001 - reported below
            box["e"] = e

    t = threading.Thread(target=run)
    try:
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "r" not in box and "e" not in box:
            if any(n.endswith(".runs") for _, _, fs in os.walk(tmp) for n in fs):
                break
            time.sleep(0.02)
        assert "r" not in box, "pass 1 ended before a worker could be killed"
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        t.join(120)
    finally:
        client.run(_set_delay, 0.0)
        client.wait_for_workers(2, timeout=60)
    assert "e" not in box, box.get("e")
    assert box["r"].records == 35999
    assert _same(local, out)
    assert os.listdir(tmp) == []
