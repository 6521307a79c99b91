"""Benchmark kxtool's compiled transport solver against POT's network simplex on the exact
problems `kxtool wmd` solves.

    python benchmarks/bench_transport.py            # the run recorded in BENCHMARKS.md
    python benchmarks/bench_transport.py --pairs 50  # quick

Texts come from bench_wmd.py's topic model over kxtool's shipped vectors; each pair goes
through kxtool's own preparation (shared mass removed, cost matrix built), and the transport
problems it hands to the solver are recorded. Both solvers then solve the same problems,
interleaved in blocks of 20, in one process; the time is per problem (solver call only).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_wmd  # noqa: E402

import kxtool.wmd.space as wmd_space  # noqa: E402
from kxtool import transport  # noqa: E402
from kxtool.wmd import wmd_pairs  # noqa: E402


def problems(model: bench_wmd.TextModel, vec, unique: int, n: int):
    got: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    real = wmd_space._emd

    def record(a, b, M):  # type: ignore[no-untyped-def]
        a = np.ascontiguousarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        got.append((a, b * (a.sum() / b.sum()), np.ascontiguousarray(M, dtype=np.float64)))
        return real(a, b, M)

    A, B = model.pairs(n, unique)
    wmd_space._emd = record
    try:
        list(wmd_pairs(A, B, vec))
    finally:
        wmd_space._emd = real
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--sizes", default="20,50,100,200,300")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    native = transport._native
    if native is None:
        sys.exit("kxtool's compiled solver is not built here (no C compiler at install?)")
    import ot

    vec, what = bench_wmd.load_vectors()
    model = bench_wmd.TextModel(vec, np.random.default_rng(args.seed))
    print(f"Vectors: {what}.")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, POT {ot.__version__};"
        f" {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}.\n"
    )
    print(
        "| distinct words/text | problems | mean size (n1 x n2) | POT | kxtool | speed-up"
        " | kxtool pivots per node | max abs diff |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for u in [int(x) for x in args.sizes.split(",")]:
        P = problems(model, vec, u, args.pairs)
        pot = transport._emd_pot
        t_pot = t_kx = 0.0
        diff = 0.0
        pivots = 0.0
        for s in range(0, len(P), 20):
            block = P[s : s + 20]
            t0 = time.perf_counter()
            ref = [pot(a, b, M) for a, b, M in block]
            t1 = time.perf_counter()
            res = [native.emd(a, b, M, 10**9) for a, b, M in block]
            t2 = time.perf_counter()
            t_pot += t1 - t0
            t_kx += t2 - t1
            for (a, b, _), r, (c, status, piv) in zip(block, ref, res, strict=True):
                assert status == 0
                diff = max(diff, abs(c - r))
                pivots += piv / (len(a) + len(b))
        n = len(P)
        n1 = np.mean([len(a) for a, _, _ in P])
        n2 = np.mean([len(b) for _, b, _ in P])
        print(
            f"| {u} | {n} | {n1:.0f} x {n2:.0f} | {t_pot / n * 1e6:,.0f} us"
            f" | {t_kx / n * 1e6:,.0f} us | {t_pot / t_kx:.2f}x | {pivots / n:.1f}"
            f" | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
