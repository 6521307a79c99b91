"""Benchmark `--cluster local:2` against the one-machine route: the shuffle and the top-10 search.

    python benchmarks/bench_cluster.py shuffle --input benchmarks/data/lines-2000000000.txt
    python benchmarks/bench_cluster.py wmd [--corpus 10000 --queries 50]
    python benchmarks/bench_cluster.py scale --input FILE [--workers 1 2 4]

- ``shuffle``: `kxtool shuffle IN -o OUT --seed 1 -S MEM` (the one-machine route, its default
  workers) against the same with `--cluster local:2 -S MEM/2` (each worker's budget: the
  same memory in all), as subprocesses, rounds interleaved, outputs compared byte for byte
  once. Then one instrumented run of the cluster route through the library (not timed) for
  the task counts and the bytes each worker read and wrote (from Dask's task stream).
- ``wmd``: `wmd_search(queries, corpus, k=10)` in one process, with `jobs=2`, and on a
  `local:2` cluster (connected once; the start-up of the cluster is reported on its own),
  rounds interleaved, answers compared.
- ``scale``: the cluster shuffle of a small file cut into many small tasks with 1, 2 and 4
  workers, for the model in ARCHITECTURE.md: tasks per pass, seconds per task, bytes per
  worker.

The machine is shared (2 cores): the load average is printed before and after; every round
is listed and the median is the headline.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f}"


def fmt_rounds(xs: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in xs) + f" (**{statistics.median(xs):.2f}**)"


def per_worker(events: list[dict], st: dict) -> dict[str, dict[str, int]]:
    """Bytes each worker read and wrote, and its tasks, from the task stream."""
    out: dict[str, dict[str, int]] = {}
    for e in events:
        key = e["key"] if isinstance(e["key"], str) else str(e["key"])
        if not key.startswith("kxtool-"):
            continue
        i = int(key.rsplit("-", 1)[1])
        w = out.setdefault(e["worker"], dict(tasks=0, read=0, written=0))
        w["tasks"] += 1
        if "_count_task" in key:
            w["read"] += st["unit_bytes"][i]
        elif "_scatter_task" in key:
            w["read"] += st["unit_bytes"][i]
            w["written"] += st["unit_bytes"][i] + 8 * st["unit_records"][i]
        elif "_order_task" in key:
            w["read"] += st["group_bytes"][i] + 8 * st["group_records"][i]
            w["written"] += st["group_bytes"][i]
    return out


def instrumented(path: str, memory: int, workers: int, tmp: str, task_bytes: int | None):
    from distributed import get_task_stream

    from kxtool.cluster import connect
    from kxtool.shuffle.cluster import shuffle_on_cluster

    st: dict = {}
    with connect(f"local:{workers}") as c:
        out = os.path.join(tmp, "instrumented.txt")
        t0 = time.perf_counter()
        with get_task_stream(client=c.client) as ts:
            shuffle_on_cluster([path], out, memory, 1, tmp, None, 0, b"\n", c, None, None,
                               task_bytes, st)
        wall = time.perf_counter() - t0
        os.unlink(out)
    return st, per_worker(ts.data, st), wall


def bench_shuffle(args: argparse.Namespace) -> None:
    from kxtool.textio import format_size, parse_size

    mem = parse_size(args.memory)
    size = os.path.getsize(args.input)
    tmp = tempfile.mkdtemp(prefix="kxbench-", dir=args.dir)
    kx = [sys.executable, "-m", "kxtool", "shuffle", args.input, "--seed", "1", "-T", tmp]
    cmds = {
        "one machine": kx + ["-S", args.memory, "-o", os.path.join(tmp, "a.txt")],
        "--cluster local:2": kx + ["-S", str(mem // 2), "--cluster", "local:2",
                                   "-o", os.path.join(tmp, "b.txt")],
    }
    print(f"# shuffle of {args.input} ({size:,} bytes), --memory {args.memory} in all")
    print(load(), flush=True)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for r in range(args.rounds):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s ({load()})", flush=True)
        if r == 0:
            same = subprocess.run(["cmp", "-s", os.path.join(tmp, "a.txt"),
                                   os.path.join(tmp, "b.txt")]).returncode == 0
            print(f"outputs identical: {same}", flush=True)
            if not same:
                sys.exit(1)
        for f in ("a.txt", "b.txt"):
            os.unlink(os.path.join(tmp, f))
    one = statistics.median(times["one machine"])
    clu = statistics.median(times["--cluster local:2"])
    print("\n| route | wall seconds per round (median) |\n|---|---|")
    for name in cmds:
        print(f"| `{name}` | {fmt_rounds(times[name])} |")
    print(f"\ncluster / one machine: **{clu / one:.2f}x** the time ({load()})")
    st, workers, wall = instrumented(args.input, mem // 2, 2, tmp, None)
    print(f"\ninstrumented cluster run ({wall:.1f} s): {st['units']} pass-1 units (so"
          f" {st['units']} counting and {st['units']} scattering tasks), {st['pass2_tasks']}"
          f" pass-2 tasks, {st['runs']} runs, {st['piles']} piles; counting"
          f" {st['count_seconds']:.1f} s, scattering {st['scatter_seconds']:.1f} s,"
          f" pass 2 {st['pass2_seconds']:.1f} s")
    print("\n| worker | tasks | bytes read | bytes written |\n|---|---:|---:|---:|")
    for w, d in sorted(workers.items()):
        print(f"| {w} | {d['tasks']} | {format_size(d['read'])} | {format_size(d['written'])} |")
    os.rmdir(tmp)


def bench_scale(args: argparse.Namespace) -> None:
    from kxtool.textio import format_size, parse_size

    mem = parse_size(args.memory)
    tmp = tempfile.mkdtemp(prefix="kxbench-", dir=args.dir)
    size = os.path.getsize(args.input)
    print(f"# scale: cluster shuffle of {args.input} ({size:,} bytes), each worker -S"
          f" {args.memory}, tasks of {args.task_bytes}")
    print(load(), flush=True)
    print("\n| workers | pass-1 units | pass-2 tasks | runs | piles | count s | scatter s |"
          " pass 2 s | wall s | ms per task | read per worker | written per worker |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for n in args.workers:
        st, workers, wall = instrumented(args.input, mem, n, tmp, parse_size(args.task_bytes))
        tasks = 2 * st["units"] + st["pass2_tasks"]
        busy = st["count_seconds"] + st["scatter_seconds"] + st["pass2_seconds"]
        reads = "/".join(format_size(d["read"]) for d in workers.values())
        writes = "/".join(format_size(d["written"]) for d in workers.values())
        print(f"| {n} | {st['units']} | {st['pass2_tasks']} | {st['runs']} | {st['piles']} |"
              f" {st['count_seconds']:.2f} | {st['scatter_seconds']:.2f} |"
              f" {st['pass2_seconds']:.2f} | {wall:.2f} | {1000 * busy * n / tasks:.0f} |"
              f" {reads} | {writes} |", flush=True)
    print(load())
    os.rmdir(tmp)


def bench_wmd(args: argparse.Namespace) -> None:
    import pickle

    import numpy as np
    from bench_wmd import TextModel, load_vectors

    from kxtool.cluster import connect
    from kxtool.wmd import wmd_search
    from kxtool.wmd.search import _Corpus, _prepare_two
    from kxtool.wmd.space import pack_space

    vec, what = load_vectors()
    model = TextModel(vec, np.random.default_rng(0))
    nt = len(model.topics)
    corpus = [model.text(int(model.rng.integers(nt)), 20) for _ in range(args.corpus)]
    queries = [model.text(int(model.rng.integers(nt)), 20) for _ in range(args.queries)]
    print(f"# top-10 search: {args.queries} queries against {args.corpus:,} texts ({what})")
    print(load(), flush=True)
    t0 = time.perf_counter()
    cl = connect("local:2")
    start = time.perf_counter() - t0
    wmd_search(queries[:2], corpus[:20], vec, k=1, cluster=cl)  # workers import kxtool
    routes = {
        "one process": dict(jobs=1),
        "--jobs 2": dict(jobs=2),
        "--cluster local:2": dict(cluster=cl),
    }
    times: dict[str, list[float]] = {k: [] for k in routes}
    answers = {}
    for r in range(args.rounds):
        for name, kw in routes.items():
            t0 = time.perf_counter()
            answers[name] = wmd_search(queries, corpus, vec, k=10, **kw)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s ({load()})", flush=True)
    cl.close()
    same = answers["one process"] == answers["--jobs 2"] == answers["--cluster local:2"]
    space, Q, C = _prepare_two(queries, corpus, vec, "wmd", None, None)
    small, (pq, pc) = pack_space(space, Q, C)
    ctx = dict(corpus=_Corpus(small, pc), Q=pq, k=10, prune=True)
    sent = len(pickle.dumps(ctx, protocol=5))
    print("\n| route | wall seconds per round (median) |\n|---|---|")
    for name in routes:
        print(f"| `{name}` | {fmt_rounds(times[name])} |")
    j2 = statistics.median(times["--jobs 2"])
    clu = statistics.median(times["--cluster local:2"])
    print(f"\nanswers identical: {same}; cluster / --jobs 2: **{clu / j2:.2f}x** the time"
          f" (starting the local cluster: {start:.2f} s more); each worker received the"
          f" context once: {sent / 1e6:.1f} MB ({len(small.table):,} of {len(vec):,} vector"
          f" rows); {load()}")
    if not same:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["shuffle", "wmd", "scale"])
    ap.add_argument("--input", default=os.path.join(ROOT, "benchmarks", "data",
                                                    "lines-2000000000.txt"))
    ap.add_argument("--memory", default="1G")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where temporary files and outputs go")
    ap.add_argument("--corpus", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--task-bytes", default="4M")
    args = ap.parse_args()
    {"shuffle": bench_shuffle, "wmd": bench_wmd, "scale": bench_scale}[args.what](args)


if __name__ == "__main__":
    main()
