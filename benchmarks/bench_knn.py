"""Benchmark: exact cosine top-k of kxtool.knn against faiss-cpu's exact IndexFlatIP, measured in
the same run, and `kxtool hubness` end to end on 100,000 vectors.

    python benchmarks/bench_knn.py                       # 50,000 x 300, k = 10
    python benchmarks/bench_knn.py --n 20000 --skip-hubness
    python benchmarks/bench_knn.py --baseline            # also the plain argpartition loop

faiss-cpu is a benchmark-only peer (`pip install faiss-cpu`), not a runtime dependency.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np


def faiss_topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    import faiss

    t = time.perf_counter()
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(y.shape[1])
    index.add(y)
    d, i = index.search(y, k + 1)
    elapsed = time.perf_counter() - t
    # drop each point itself (or the last entry, should a tie push it out of the list)
    n = len(x)
    out_i = np.empty((n, k), np.int64)
    out_d = np.empty((n, k), np.float32)
    for r in range(n):
        keep = i[r] != r
        if keep.all():
            keep[-1] = False
        out_i[r], out_d[r] = i[r][keep], d[r][keep]
    return out_i, out_d, elapsed


def baseline_topk(x: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(y)
    out = np.empty((n, k), np.int64)
    for s in range(0, n, block):
        sc = y[s : s + block] @ y.T
        sc[np.arange(len(sc)), np.arange(s, s + len(sc))] = -np.inf
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--skip-hubness", action="store_true")
    a = ap.parse_args()

    from kxtool.knn import topk

    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" numpy {np.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
    )
    x = np.random.default_rng(a.seed).standard_normal((a.n, a.dim), dtype=np.float32)
    print(f"# data: {a.n} x {a.dim} float32 standard normal, cosine, k={a.k}, self excluded")

    t = time.perf_counter()
    ki, kv = topk(x, k=a.k, metric="cosine")
    t_kx = time.perf_counter() - t
    print(f"kxtool.knn.topk          {t_kx:7.2f} s")

    fi, fv, t_fa = faiss_topk(x, a.k)
    print(f"faiss IndexFlatIP        {t_fa:7.2f} s")
    print(f"ratio kxtool / faiss     {t_kx / t_fa:7.2f}")

    same_rows = float((ki == fi).all(axis=1).mean())
    same_sets = float(np.mean([set(p) == set(q) for p, q in zip(ki, fi, strict=True)]))
    diff = ~(ki == fi).all(axis=1)
    # rows that differ should differ only among (near-)tied scores
    gap = float(np.abs(kv[diff] - fv[diff]).max()) if diff.any() else 0.0
    print(
        f"identical neighbour lists {same_rows:.6f} of rows; identical sets {same_sets:.6f};"
        f" rows differing: {int(diff.sum())}, max score gap there {gap:.2e}"
    )

    if a.baseline:
        bi, t_b = baseline_topk(x, a.k)
        print(f"plain numpy argpartition {t_b:7.2f} s (same lists: {(bi == ki).all(1).mean():.6f})")

    if not a.skip_hubness:
        from kxtool.vectors import default_vectors_path

        path = default_vectors_path()
        for extra in ([], ["--reduce", "csls"]):
            cmd = [sys.executable, "-m", "kxtool", "hubness", path, "--json", *extra]
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            el = time.perf_counter() - t
            if p.returncode:
                print(f"hubness failed: {p.stderr.strip()}")
                continue
            import json

            d = json.loads(p.stdout)
            m = d["measures"]
            line = (
                f"kxtool hubness {os.path.basename(path)} {' '.join(extra)}: n={d['n']}"
                f" dim={d['dim']} k={d['k']}: {el:.1f} s end to end; k-skewness"
                f" {m['k_skewness']:.3f}, Spearman(N_k, dist to mean)"
                f" {m['spearman_occurrence_vs_distance_to_mean']:.3f}"
            )
            if "reduction" in d:
                line += f"; after csls k-skewness {d['reduction']['measures']['k_skewness']:.3f}"
            print(line)


if __name__ == "__main__":
    main()
