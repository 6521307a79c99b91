"""How well `kxtool wmd` ranks texts as people do: correlation with human similarity ratings and
leave-one-out kNN error, for every metric x word weights x stopword list, with kxtool's
built-in vectors (GloVe 6B 50d).

    pip download --no-deps gensim==4.4.0 -d /tmp/g && unzip -q -o /tmp/g/gensim-*.whl \\
        'gensim/test/test_data/*' -d /tmp/g
    python benchmarks/bench_wmd_quality.py --data /tmp/g/gensim/test/test_data

The data are the test files that the gensim wheel ships (LGPL-2.1 package; the data are the
authors' research releases), read from that directory; nothing is downloaded here.

- ``lee``: Lee, Pincombe & Welsh (2005), "An empirical evaluation of models of text document
  similarity": 50 short news documents (``lee.cor``) and the mean human similarity rating of
  every pair (``similarities0-1.txt``). Split by documents: pairs among documents 1-25 are
  the tuning set, pairs among documents 26-50 the held-out set (300 pairs each).
- ``polarity``: 200 movie-review sentences of Pang & Lee's sentence polarity data
  (``pang_lee_polarity.cor``, 100 positive, 100 negative): leave-one-out 5-NN error (tuning).
- ``news``: 200 posts of the 20 Newsgroups collection (``mini_newsgroup``, alt.atheism and
  sci.space, 100 each), headers removed and cut to their first 60 words: leave-one-out 5-NN
  error (held out).

Stopword lists: ``old`` (kxtool's own list before issue 12, read from git), ``default`` (the
standard lists now shipped) and ``none``. Weights: ``none``; ``idf`` counted over the texts of
each set; ``sif-texts``, SIF with ``p(w)`` counted over the texts of each set; ``sif-rank``,
SIF with ``p(w)`` from Zipf's law over the vectors' word order (``--frequencies rank``). The
SIF constant is kxtool's default, 1e-3 (``--sif-a`` to try others).

Distances are turned into similarities by negation; Pearson and Spearman correlations are
computed over the pairs of each set.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from kxtool.text import Tokenizer  # noqa: E402
from kxtool.vectors import default_vectors  # noqa: E402
from kxtool.wmd import Weighting, wmd_cross  # noqa: E402

METRICS = ("wmd", "wrd", "wcd", "rwmd", "sinkhorn")
WEIGHTS = ("none", "idf", "sif-texts", "sif-rank")
STOPLISTS = ("old", "default", "none")
OLD_COMMIT = "08ef6f0"  # the last commit with kxtool's own stopword lists


# ---------------------------------------------------------------------------------------------
# data


def load_lee(d: str) -> tuple[list[str], np.ndarray]:
    with open(os.path.join(d, "lee.cor"), encoding="utf-8", errors="replace") as f:
        docs = [line.strip() for line in f if line.strip()]
    rows = []
    with open(os.path.join(d, "similarities0-1.txt"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append([float(x) for x in line.split()])
    S = np.array(rows)
    S = np.triu(S, 1) + np.triu(S, 1).T  # the file holds the upper triangle
    assert len(docs) == 50 and S.shape == (50, 50), (len(docs), S.shape)
    return docs, S


def load_polarity(d: str) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    with open(os.path.join(d, "pang_lee_polarity.cor"), encoding="utf-8", errors="replace") as f:
        for line in f:
            label, _, text = line.strip().partition(" ")
            texts.append(text)
            labels.append(1 if label == "__label__pos" else 0)
    return texts, np.array(labels)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if name == "Bunch":  # scikit-learn's Bunch: a dict is enough here
            return dict
        return super().find_class(module, name)


def load_news(d: str, words: int = 60) -> tuple[list[str], np.ndarray]:
    with open(os.path.join(d, "mini_newsgroup"), "rb") as f:
        data = _Unpickler(io.BytesIO(zlib.decompress(f.read())), encoding="latin1").load()
    texts = []
    for post in data["data"]:
        _, _, body = post.partition("\n\n")  # drop the headers
        toks = re.findall(r"[A-Za-z][A-Za-z']+", body)
        texts.append(" ".join(toks[:words]))
    return texts, np.asarray(data["target"])


def old_stopwords(repo: str) -> frozenset[str]:
    out: set[str] = set()
    for lang in ("en", "zh"):
        text = subprocess.run(
            ["git", "-C", repo, "show", f"{OLD_COMMIT}:kxtool/data/stopwords_{lang}.txt"],
            check=True, capture_output=True, text=True,
        ).stdout
        out |= {w.strip().lower() for w in text.splitlines() if w.strip()
                and not w.startswith("#")}
    return frozenset(out)


# ---------------------------------------------------------------------------------------------
# measures


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    # average ranks of ties
    xs = x[order]
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        if j > i:
            r[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_rank(x), _rank(y))


def knn_error(D: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN error: each text's label by majority of its k nearest others (ties
    of distance broken by index; a text without a distance counts as an error)."""
    n = len(labels)
    wrong = 0
    for i in range(n):
        d = D[i].copy()
        d[i] = np.inf
        d[np.isnan(d)] = np.inf
        nn = np.lexsort((np.arange(n), d))[:k]
        if not np.isfinite(d[nn]).all():
            wrong += 1
            continue
        votes = np.bincount(labels[nn], minlength=labels.max() + 1)
        wrong += int(np.argmax(votes) != labels[i])
    return wrong / n


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="gensim's test_data directory")
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--weights", default=",".join(WEIGHTS))
    ap.add_argument("--stopwords", default=",".join(STOPLISTS))
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--sif-a", type=float, default=1e-3)
    ap.add_argument("--sets", default="lee,polarity,news")
    ap.add_argument("--json", help="also write every result to this JSON file")
    args = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    vec = default_vectors()
    lee_docs, S = load_lee(args.data)
    pol, pol_y = load_polarity(args.data)
    news, news_y = load_news(args.data)
    halves = {"lee-tune": list(range(25)), "lee-heldout": list(range(25, 50))}
    stoplists = {"old": old_stopwords(repo), "default": "default", "none": "none"}
    print(f"# {platform.python_version()} numpy {np.__version__}; vectors: {vec.source}")
    print(f"# load average at start: {os.getloadavg()}")
    results = []
    t0 = time.perf_counter()
    for sw in args.stopwords.split(","):
        tok = Tokenizer(stopwords=stoplists[sw])
        for metric in args.metrics.split(","):
            for w in args.weights.split(","):
                row = {"stopwords": sw, "metric": metric, "weights": w}
                sets = args.sets.split(",")
                if w == "sif-texts":
                    wt: object = Weighting("sif", args.sif_a, "texts")
                elif w == "sif-rank":
                    wt = Weighting("sif", args.sif_a, "rank")
                else:
                    wt = w
                for name, idx in halves.items():
                    if "lee" not in sets:
                        continue
                    D = wmd_cross([lee_docs[i] for i in idx], None, vec, metric=metric,
                                  tokenizer=tok, weights=wt, jobs=args.jobs)
                    iu = np.triu_indices(len(idx), 1)
                    human = S[np.ix_(idx, idx)][iu]
                    sim = -D[iu]
                    ok = ~np.isnan(sim)
                    row[f"{name}-pearson"] = pearson(sim[ok], human[ok])
                    row[f"{name}-spearman"] = spearman(sim[ok], human[ok])
                for name, texts, y in (("polarity", pol, pol_y), ("news", news, news_y)):
                    if name not in sets:
                        continue
                    D = wmd_cross(texts, None, vec, metric=metric, tokenizer=tok, weights=wt,
                                  jobs=args.jobs)
                    row[f"{name}-knn-error"] = knn_error(D, y, args.k)
                results.append(row)
                shown = "  ".join(
                    f"{k.replace('-pearson', ' r').replace('-spearman', ' rho')}={v:.3f}"
                    for k, v in row.items() if isinstance(v, float)
                )
                print(f"{sw:8s} {metric:9s} {w:9s}  {shown}", flush=True)
    print(f"# {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
