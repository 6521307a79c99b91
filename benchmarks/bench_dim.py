"""Benchmark of `kxtool dim --method pip` on a generated corpus whose PMI rank is known.

The corpus comes from a log-linear topic model (Arora et al., TACL 2016): every line has a
topic vector c ~ N(0, s^2 I_K), and its words are drawn from P(w | c) ~ exp(b_w + v_w . c) with
Zipf base frequencies b_w = -ln(rank of w) and word vectors v_w ~ N(0, I_K / K). If the
partition function were constant, PMI(w, w') would be exactly s^2 v_w . v_w', a matrix of rank
K. It is not constant, and the PMI of a finite corpus sets unseen pairs to 0, so the PMI matrix
has the K planted topic directions plus a few more (word offsets a_w + a_w', which alone have
rank 2, and the zero-filled pattern of rare pairs); they show as separate singular values
above the K topic ones and below them. The benchmark prints the leading singular values so the
gap can be seen, and the estimate is read against "K topic directions + those few".

    python benchmarks/bench_dim.py --dense-peer      # 10M tokens, V = 10,000, K = 50, s = 3
    python benchmarks/bench_dim.py --tokens 1000000  # a quick run
    python benchmarks/bench_dim.py --generate-only topic.txt   # just the corpus

Reported: generation time, `wc -w` (the floor for any pass that reads the corpus),
`kxtool dim --corpus` (distinct-token count), `kxtool dim --method pip` end to end with its
phase times, the estimate against the planted rank and, with --dense-peer, the dense
eigen-decomposition of the same PMI matrix (`numpy.linalg.eigvalsh`, what the reference code's
full SVD costs at the least) for the spectrum step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def generate(path, vocab, rank, tokens, *, line_len=100, strength=1.0, seed=0, batch=200):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((vocab, rank)) / math.sqrt(rank)
    base = -np.log(np.arange(1, vocab + 1))
    words = np.array([f"w{i}" for i in range(vocab)], dtype=object)
    done = 0
    with open(path, "w") as f:
        while done < tokens:
            b = min(batch, -(-(tokens - done) // line_len))
            c = rng.standard_normal((b, rank)) * strength
            logit = base + c @ vecs.T
            logit -= logit.max(axis=1, keepdims=True)
            p = np.exp(logit)
            p /= p.sum(axis=1, keepdims=True)
            cdf = np.cumsum(p, axis=1)
            cdf[:, -1] = 1.0
            cdf += np.arange(b)[:, None]
            u = rng.random((b, line_len)) + np.arange(b)[:, None]
            idx = np.searchsorted(cdf.ravel(), u.ravel()).reshape(b, line_len)
            idx = np.clip(idx - np.arange(b)[:, None] * vocab, 0, vocab - 1)
            f.write("\n".join(" ".join(words[r]) for r in idx) + "\n")
            done += b * line_len


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--vocab", type=int, default=10_000, help="words in the model")
    ap.add_argument("--rank", type=int, default=50, help="planted topic dimension K")
    ap.add_argument("--strength", type=float, default=3.0, help="topic strength s")
    ap.add_argument("--top", type=int, default=10_000)
    ap.add_argument("--corpus", help="reuse this corpus file instead of generating one")
    ap.add_argument("--dense-peer", action="store_true", help="also time dense eigvalsh")
    ap.add_argument("--generate-only", metavar="PATH", help="write the corpus to PATH and stop")
    args = ap.parse_args()
    if args.generate_only:
        generate(args.generate_only, args.vocab, args.rank, args.tokens, strength=args.strength)
        return
    tmp = tempfile.mkdtemp(prefix="bench-dim-")
    try:
        run(args, args.corpus or os.path.join(tmp, "topic.txt"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, path):
    if not args.corpus:
        t = time.perf_counter()
        generate(path, args.vocab, args.rank, args.tokens, strength=args.strength)
        print(f"generated {args.tokens} tokens in {time.perf_counter() - t:.1f} s: {path}")
    size = os.path.getsize(path)
    print(f"corpus: {size / 2**20:.1f} MiB")
    t_wc, out = timed(["wc", "-w", path])
    print(f"wc -w: {t_wc:.2f} s ({out.split()[0]} words)")
    kx = [sys.executable, "-m", "kxtool"]
    t_count, out = timed([*kx, "dim", "--corpus", path, "--json"])
    n = json.loads(out)["results"][0]["vocab"]
    print(f"kxtool dim --corpus: {t_count:.2f} s (N = {n})")
    cmd = [*kx, "dim", "--method", "pip", "--corpus", path, "--top", str(args.top), "--json"]
    t_pip, out = timed(cmd)
    res = json.loads(out)
    print(
        f"kxtool dim --method pip --corpus {os.path.basename(path)} --top {args.top}: "
        f"{t_pip:.1f} s end to end"
    )
    print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["seconds"].items()))
    print(
        f"  estimate: dim {res['dim']} (planted K = {args.rank} topic directions), "
        f"rank above noise {res['rank']}, sigma {res['sigma']:.4g}, "
        f"threshold {res['threshold']:.4g}"
    )
    print(
        "  leading singular values: "
        + " ".join(f"{x:.0f}" for x in res["spectrum"][: args.rank + 6])
    )
    if args.dense_peer:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from kxtool import dim as D

        # the same PMI matrix, then the dense spectrum (eigenvalues only, float32)
        with tempfile.TemporaryDirectory() as td:
            counts = {}

            def grab(h1, h2, **kw):
                counts["m"] = D.pmi_matrix(h1 + h2)
                return type("R", (), {"seconds": {}})()

            orig = D.pip_from_counts
            D.pip_from_counts = grab
            try:
                D.pip_dimension(path, top=args.top, tmp_dir=td)
            finally:
                D.pip_from_counts = orig
        t = time.perf_counter()
        np.linalg.eigvalsh(counts["m"])
        print(
            f"  dense peer: numpy.linalg.eigvalsh of the {args.top}^2 PMI matrix "
            f"{time.perf_counter() - t:.1f} s (vs spectrum {res['seconds']['spectrum']:.1f} s)"
        )


if __name__ == "__main__":
    main()
