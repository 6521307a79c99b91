"""Benchmark `kxtool wmd` against gensim's KeyedVectors.wmdistance, and top-k search against
brute force.

    python benchmarks/bench_wmd.py                 # the full run recorded in BENCHMARKS.md
    python benchmarks/bench_wmd.py --pairs 200 --top-corpus 2000 --top-queries 10   # quick
    python benchmarks/bench_wmd.py --weights-only --pairs 1000 --rounds 3   # cost of --weights

Both libraries get the same vectors (kxtool's shipped GloVe 6B 50d, 100k words, when present;
otherwise random vectors over a synthetic vocabulary - the output says which), the same token
lists (already tokenised, every token in the vocabulary) and the same pairs, in one process.
gensim is called with ``norm=False`` so that both compute Kusner's WMD on the raw vectors; the
largest difference between the two answers is printed.

The machine has two shared cores whose load varies, so the two sides are timed in interleaved
blocks of pairs (gensim on a block, kxtool on the same block, next block), and BLAS is limited
to one thread for both (set below, before numpy loads) so that neither fights the other's
threads or the second process of ``--jobs 2``.

Texts come from a small topic model over the vocabulary: a topic is the 400 words nearest (by
cosine) to a seed word; a text draws each token from its topic's words (Zipf over their
nearness) with probability 0.5, else from the whole vocabulary (Zipf over frequency ranks
100..50,000), until it has the wanted number of distinct words. The two texts of a pair share a
topic, as related documents do; their vocabulary overlap is reported.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from kxtool import transport  # noqa: E402
from kxtool.vectors import Vectors  # noqa: E402
from kxtool.wmd import WmdStats, wmd_pairs, wmd_search  # noqa: E402


def load_vectors() -> tuple[Vectors, str]:
    try:
        from kxtool.vectors import default_vectors

        vec = default_vectors()
        return vec, "kxtool's shipped vectors: " + vec.source
    except Exception as e:  # noqa: BLE001 - any failure: fall back to random vectors
        rng = np.random.default_rng(0)
        n, dim = 100_000, 50
        words = [f"w{i}" for i in range(n)]
        M = rng.normal(size=(n, dim)).astype(np.float32)
        return Vectors(words, M), f"random vectors, synthetic vocabulary ({n} x {dim}; {e})"


class TextModel:
    def __init__(self, vec: Vectors, rng: np.random.Generator, topics: int = 200) -> None:
        self.words = vec.words
        self.rng = rng
        n = min(len(vec), 50_000)
        self.ranks = np.arange(min(100, n // 2), n)
        p = 1.0 / (self.ranks - self.ranks[0] + 10.0)
        self.p = p / p.sum()
        U = np.asarray(vec.matrix[:n], dtype=np.float32)
        U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-9)
        seeds = rng.choice(np.arange(200, min(20_000, n)), size=topics, replace=False)
        self.topics = []
        for s in seeds:
            sim = U @ U[s]
            near = np.argsort(-sim)[:400]
            self.topics.append(near)
        q = 1.0 / (np.arange(400) + 5.0)
        self.q = q / q.sum()

    def text(self, topic: int, unique: int) -> list[str]:
        rng = self.rng
        out: list[str] = []
        seen: set[int] = set()
        T = self.topics[topic]
        while len(seen) < unique:
            batch = 4 * (unique - len(seen)) + 8
            from_topic = rng.random(batch) < 0.5
            t_ids = T[rng.choice(len(T), size=batch, p=self.q)]
            b_ids = self.ranks[rng.choice(len(self.ranks), size=batch, p=self.p)]
            for i in np.where(from_topic, t_ids, b_ids):
                out.append(self.words[int(i)])
                seen.add(int(i))
                if len(seen) >= unique:
                    break
        return out

    def pairs(self, n: int, unique: int) -> tuple[list[list[str]], list[list[str]]]:
        A, B = [], []
        for _ in range(n):
            t = int(self.rng.integers(len(self.topics)))
            A.append(self.text(t, unique))
            B.append(self.text(t, unique))
        return A, B


def bench_pairs(vec: Vectors, kv, model: TextModel, sizes: list[int], n: int, jobs: int) -> None:
    print("\n## Pairs: kxtool.wmd_pairs vs gensim KeyedVectors.wmdistance(norm=False)\n")
    print(f"{n} pairs per size, interleaved blocks of 100 pairs, single process unless noted.\n")
    print(
        "| unique words/text | tokens/text | overlap | gensim pairs/s | kxtool pairs/s | speed-up"
        " (wall) | speed-up (CPU) | kxtool on POT's solver pairs/s | vs gensim"
        f" | kxtool jobs={jobs} pairs/s | vs jobs=1 | vs gensim | max abs diff |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for u in sizes:
        A, B = model.pairs(n, u)
        toks = np.mean([len(a) for a in A])
        overlap = np.mean([len(set(a) & set(b)) / len(set(a)) for a, b in zip(A, B, strict=True)])
        list(wmd_pairs(A[:2], B[:2], vec))  # warm up imports
        tg = tk = tp = cg = ck = 0.0
        g_all: list[float] = []
        k_all: list[float] = []
        p_all: list[float] = []
        native = transport._native
        for s in range(0, n, 100):
            a, b = A[s : s + 100], B[s : s + 100]
            t0, c0 = time.perf_counter(), time.process_time()
            g_all += [kv.wmdistance(x, y, norm=False) for x, y in zip(a, b, strict=True)]
            t1, c1 = time.perf_counter(), time.process_time()
            k_all += list(wmd_pairs(a, b, vec))
            t2, c2 = time.perf_counter(), time.process_time()
            transport._native = None  # what an install without the compiled solver does
            try:
                p_all += list(wmd_pairs(a, b, vec))
            finally:
                transport._native = native
            t3 = time.perf_counter()
            tg += t1 - t0
            tk += t2 - t1
            tp += t3 - t2
            cg += c1 - c0
            ck += c2 - c1
        diff = float(np.max(np.abs(np.array(g_all) - np.array(k_all))))
        diff = max(diff, float(np.max(np.abs(np.array(p_all) - np.array(k_all)))))
        t0 = time.perf_counter()
        k1 = list(wmd_pairs(A, B, vec))
        t1 = time.perf_counter()
        kj = list(wmd_pairs(A, B, vec, jobs=jobs))
        t2 = time.perf_counter()
        assert kj == k1 == k_all
        # the --jobs run is compared with the single-process run made just before it
        one, par = n / (t1 - t0), n / (t2 - t1)
        print(
            f"| {u} | {toks:.0f} | {overlap:.0%} | {n / tg:,.0f} | {n / tk:,.0f} | {tg / tk:.1f}x"
            f" | {cg / ck:.1f}x | {n / tp:,.0f} | {tg / tp:.1f}x"
            f" | {par:,.0f} | {par / one:.2f}x | {par / one * tg / tk:.1f}x"
            f" | {diff:.1e} |",
            flush=True,
        )


def bench_top(vec: Vectors, model: TextModel, n_corpus: int, n_q: int, k: int, jobs: int):
    print(f"\n## Top-{k} search: prefetch-and-prune vs brute-force exact WMD\n")
    unique = 20
    n_topics = len(model.topics)
    corpus = [model.text(int(model.rng.integers(n_topics)), unique) for _ in range(n_corpus)]
    queries = [model.text(int(model.rng.integers(len(model.topics))), unique) for _ in range(n_q)]
    wmd_search(queries[:1], corpus[:10], vec, k=1)
    st = WmdStats()
    t0, c0 = time.perf_counter(), time.process_time()
    pruned = wmd_search(queries, corpus, vec, k=k, stats=st)
    t1, c1 = time.perf_counter(), time.process_time()
    brute = wmd_search(queries, corpus, vec, k=k, prune=False)
    t2, c2 = time.perf_counter(), time.process_time()
    pj = wmd_search(queries, corpus, vec, k=k, jobs=jobs)
    t3 = time.perf_counter()
    same = pruned == brute == pj
    print(
        f"{n_q} queries against {n_corpus} texts of about {unique} distinct words, k = {k};"
        f" each time includes preparing the {n_corpus:,} texts.\n"
    )
    print("| method | wall time | CPU time | exact WMDs | speed-up (wall) | speed-up (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| brute force | {t2 - t1:.1f} s | {c2 - c1:.1f} s | {n_q * n_corpus:,} | 1x | 1x |"
    )
    print(
        f"| prefetch-and-prune | {t1 - t0:.2f} s | {c1 - c0:.2f} s | {st.exact:,}"
        f" | {(t2 - t1) / (t1 - t0):.1f}x | {(c2 - c1) / (c1 - c0):.1f}x |"
    )
    print(
        f"| prefetch-and-prune, --jobs {jobs} | {t3 - t2:.2f} s | | |"
        f" {(t2 - t1) / (t3 - t2):.1f}x | |"
    )
    print(f"\nSame answer as brute force (indices and distances, all queries): {same}")
    if not same:
        sys.exit(1)


def bench_weights(vec: Vectors, model: TextModel, sizes: list[int], n: int, rounds: int) -> None:
    """Pairs per second of ``wmd_pairs`` with each word weighting against ``weights="none"``,
    in interleaved blocks of 100 pairs (the order of the weightings rotating from block to
    block, each timed 5 times and the fastest kept, since the machine is shared); weights
    counted from the texts are counted over each block, as a run would."""
    from kxtool.wmd import Weighting

    kinds = {
        "none": "none",
        "idf": "idf",
        "sif (rank)": Weighting("sif", frequencies="rank"),
        "sif (texts)": Weighting("sif", frequencies="texts"),
    }
    print("\n## Cost of word weights: wmd_pairs pairs/s with each --weights\n")
    print(f"{n} pairs per size and round, interleaved blocks of 100 pairs (fastest of 5 runs"
          " each), one process.\n")
    print("| metric | unique words/text | round | " + " | ".join(f"{k} pairs/s" for k in kinds)
          + " | " + " | ".join(f"{k} / none" for k in list(kinds)[1:]) + " |")
    print("|---|---:|---:|" + "---:|" * (2 * len(kinds) - 1))
    for metric in ("wmd", "wrd"):
        for u in sizes:
            A, B = model.pairs(n, u)
            list(wmd_pairs(A[:2], B[:2], vec, metric=metric))
            for r in range(1, rounds + 1):
                t = dict.fromkeys(kinds, 0.0)
                names = list(kinds)
                for bi, s in enumerate(range(0, n, 100)):
                    a, b = A[s : s + 100], B[s : s + 100]
                    best = dict.fromkeys(kinds, float("inf"))
                    for rep in range(5):  # the fastest of 5: the least disturbed by others
                        at = (bi + rep) % len(names)
                        for name in names[at:] + names[:at]:
                            t0 = time.perf_counter()
                            list(wmd_pairs(a, b, vec, metric=metric, weights=kinds[name]))
                            best[name] = min(best[name], time.perf_counter() - t0)
                    for name in names:
                        t[name] += best[name]
                rate = {k: n / v for k, v in t.items()}
                print(
                    f"| {metric} | {u} | {r} | "
                    + " | ".join(f"{rate[k]:,.0f}" for k in kinds)
                    + " | "
                    + " | ".join(f"{rate[k] / rate['none']:.3f}" for k in list(kinds)[1:])
                    + " |",
                    flush=True,
                )
    print(f"\nload average at end {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--sizes", default="20,50,200")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--top-corpus", type=int, default=10_000)
    ap.add_argument("--top-queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--skip-pairs", action="store_true")
    ap.add_argument("--skip-top", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights-only", action="store_true",
                    help="only the cost of --weights (no gensim needed)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.weights_only:
        vec, what = load_vectors()
        print(f"Vectors: {what}. Python {platform.python_version()}, numpy {np.__version__};"
              f" {os.cpu_count()} CPUs; load average at start {os.getloadavg()}.")
        model = TextModel(vec, np.random.default_rng(args.seed))
        bench_weights(vec, model, [int(x) for x in args.sizes.split(",")], args.pairs,
                      args.rounds)
        return

    logging.disable(logging.WARNING)  # gensim logs every OOV removal
    import gensim
    import ot
    from gensim.models import KeyedVectors

    vec, what = load_vectors()
    kv = KeyedVectors(vec.dim)
    kv.add_vectors(vec.words, np.asarray(vec.matrix, dtype=np.float32))
    model = TextModel(vec, np.random.default_rng(args.seed))
    print(f"Vectors: {what}.")
    print(f"kxtool's exact solver: {transport.solver()}.")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, POT {ot.__version__},"
        f" gensim {gensim.__version__}; {os.cpu_count()} CPUs; load average at start"
        f" {os.getloadavg()[0]:.1f}."
    )
    if not args.skip_pairs:
        sizes = [int(x) for x in args.sizes.split(",")]
        bench_pairs(vec, kv, model, sizes, args.pairs, args.jobs)
    if not args.skip_top:
        bench_top(vec, model, args.top_corpus, args.top_queries, args.k, args.jobs)


if __name__ == "__main__":
    main()
