"""Exact top-k search: Kusner's prefetch-and-prune over WCD and RWMD, ties by corpus index, so
the result equals brute force."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .. import parallel
from ..errors import KxError
from ..progress import Progress
from ..text import Tokenizer
from .space import (
    DEFAULT_REG,
    Doc,
    DocSpace,
    Text,
    WmdStats,
    _centroids,
    _check_reg,
    _prepare_two,
)
from .weights import Weighting, WordWeights

# ---------------------------------------------------------------------------------------------
# top-k search


_CHUNK = 1 << 22  # cost-matrix entries computed at once by the bounds (32 MiB of float64)


class _Corpus:
    """The search side: docs, centroids, and the concatenated rows and mass of the non-empty
    docs (``valid``), so that the bounds of a query against every doc are a few array ops."""

    def __init__(self, space: DocSpace, docs: list[Doc]) -> None:
        self.space = space
        self.docs = docs
        self.C, self.ok = _centroids(space, docs)
        self.valid = np.flatnonzero(self.ok)
        self.lens = np.array([len(docs[j].rows) for j in self.valid], dtype=np.int64)
        self.start = np.zeros(len(self.valid) + 1, dtype=np.int64)
        np.cumsum(self.lens, out=self.start[1:])
        if len(self.valid):
            rows = np.concatenate([docs[j].rows for j in self.valid])
            self.w = np.concatenate([docs[j].w for j in self.valid])
        else:
            rows = np.empty(0, dtype=np.int64)
            self.w = np.empty(0)
        # the corpus vocabulary (table rows) and each doc word as a position in it
        self.vocab, self.rows = np.unique(rows, return_inverse=True)
        self.rows = self.rows.reshape(-1)

    def bound_centroid(self, q: Doc) -> np.ndarray:
        """WCD (or its WRD analogue) from ``q`` to every valid doc, in ``valid`` order."""
        D = self.C[self.valid] - self.space.centroid(q)
        s = np.einsum("ij,ij->i", D, D)
        return np.sqrt(s) if self.space.kind == "euclid" else 0.5 * s

    def _cost_to(self, q: Doc, rows: np.ndarray, same: bool = True) -> np.ndarray:
        """The cost from each word of ``q`` to each table row ``rows`` (same word: 0, unless
        ``same`` is false and the caller sees to it)."""
        sp = self.space
        T = sp.table
        G = T[q.rows] @ T[rows].T
        if sp.kind == "euclid":
            M = q.sq[:, None] + sp.tsq[rows][None, :]  # type: ignore[index]
            M -= 2.0 * G
            np.maximum(M, 0.0, out=M)
            np.sqrt(M, out=M)
        else:
            M = 1.0 - G
            np.clip(M, 0.0, 2.0, out=M)
        if same:
            np.putmask(M, q.rows[:, None] == rows[None, :], 0.0)
        return M

    def _token_positions(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``rows``/``w`` of the words of the valid docs ``pos``, and the offset
        of each doc in that list."""
        lens = self.lens[pos]
        offs = np.zeros(len(pos), dtype=np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        tok = np.repeat(self.start[pos] - offs, lens)
        tok += np.arange(len(tok))
        return tok, offs

    def bound_relaxed(self, q: Doc, pos: np.ndarray, thr: float | None = None) -> np.ndarray:
        """RWMD (or its WRD analogue) from ``q`` to the valid docs at positions ``pos``.

        RWMD is the larger of two relaxations: every word of the candidate sent to its nearest
        query word ("to q"), and every query word to its nearest candidate word ("from q").
        When the cost from the query to every word of the table fits in a chunk, it is
        computed once, "to q" comes from its column minima for all candidates at once, and
        "from q" is computed only for the candidates that "to q" leaves at or below ``thr``
        (the others keep "to q", already above ``thr``). Otherwise candidates are taken a chunk
        of words at a time.
        """
        n1 = len(q.rows)
        out = np.empty(len(pos))
        if not len(pos):
            return out
        if n1 * len(self.vocab) <= _CHUNK:
            D = self._cost_to(q, self.vocab, same=False)
            # the query's own words cost nothing to themselves
            at = np.searchsorted(self.vocab, q.rows)
            hit = at < len(self.vocab)
            hit[hit] = self.vocab[at[hit]] == q.rows[hit]
            D[np.flatnonzero(hit), at[hit]] = 0.0
            D = D.T.copy()  # (corpus words, query words)
            nearest = D.min(axis=1)
            if len(pos) * 4 >= len(self.valid):
                out[:] = np.add.reduceat(nearest[self.rows] * self.w, self.start[:-1])[pos]
            else:
                tok, offs = self._token_positions(pos)
                out[:] = np.add.reduceat(nearest[self.rows[tok]] * self.w[tok], offs)
            todo = np.arange(len(pos)) if thr is None else np.flatnonzero(out <= thr)
            per = max(1, _CHUNK // max(1, n1 * int(self.lens.mean())))
            for s in range(0, len(todo), per):
                sub = todo[s : s + per]
                tok, offs = self._token_positions(pos[sub])
                from_q = np.minimum.reduceat(D[self.rows[tok]], offs, axis=0) @ q.w
                out[sub] = np.maximum(out[sub], from_q)
            return out
        s = 0
        while s < len(pos):
            e = s + 1
            total = self.lens[pos[s]]
            while e < len(pos) and n1 * (total + self.lens[pos[e]]) <= _CHUNK:
                total += self.lens[pos[e]]
                e += 1
            tok, offs = self._token_positions(pos[s:e])
            M = self._cost_to(q, self.vocab[self.rows[tok]])
            to_q = np.add.reduceat(M.min(axis=0) * self.w[tok], offs)
            from_q = q.w @ np.minimum.reduceat(M, offs, axis=1)
            out[s:e] = np.maximum(to_q, from_q)
            s = e
        return out


def _search_one(corpus: _Corpus, q: Doc, k: int, prune: bool, st: WmdStats):
    """The ``k`` nearest valid docs of ``q`` as ``(index, distance)``, by (distance, index).

    Kusner's prefetch-and-prune: visit the candidates by increasing WCD (ties by index); the
    first ``k`` get exact distances; after that a candidate whose WCD exceeds the current
    ``k``-th distance ends the visit (every later one has a larger WCD), and one whose RWMD
    exceeds it is skipped. Bounds are compared with a relative slack of 1e-9, so rounding in
    a bound never drops a true neighbour, and a candidate tied with the ``k``-th is computed
    and ordered by index: the answer is the brute-force answer.
    """
    if q.empty or k <= 0 or not len(corpus.valid):
        return []
    exact = corpus.space.exact
    docs = corpus.docs
    valid = corpus.valid
    st.candidates += len(valid)
    if not prune:
        ds = [(exact(q, docs[j]), int(j)) for j in valid]
        st.exact += len(ds)
        ds.sort()
        return [(j, d) for d, j in ds[:k]]
    wcd = corpus.bound_centroid(q)
    order = np.lexsort((valid, wcd))  # positions in ``valid``, by (WCD, index)
    best = sorted((exact(q, docs[int(valid[p])]), int(valid[p])) for p in order[:k])
    n_exact = len(best)
    rest = order[k:]
    if len(rest):
        thr = best[-1][0]
        # everything from the first candidate whose WCD exceeds the k-th distance on is out
        stop = int(np.searchsorted(wcd[rest], thr + 1e-9 * (1.0 + thr), side="right"))
        rest = rest[:stop]
    if len(rest):
        rw = corpus.bound_relaxed(q, rest, thr + 1e-9 * (1.0 + thr))
        for p, r in zip(rest, rw, strict=True):
            tol = 1e-9 * (1.0 + thr)
            if wcd[p] > thr + tol:
                break
            if r > thr + tol:
                continue
            j = int(valid[p])
            item = (exact(q, docs[j]), j)
            n_exact += 1
            if item < best[-1]:
                bisect.insort(best, item)
                best.pop()
                thr = best[-1][0]
    st.exact += n_exact
    st.pruned += len(valid) - n_exact
    return [(j, d) for d, j in best]


def _search_chunk(
    work: dict[str, Any], qs: list[int]
) -> tuple[list[list[tuple[int, float]]], WmdStats]:
    """A task: the top-k of a chunk of queries (and the search work it took)."""
    st = WmdStats()
    corpus, Q = work["corpus"], work["Q"]
    out = [_search_one(corpus, Q[i], work["k"], work["prune"], st) for i in qs]
    return out, st


def _search_brute_metric(space: DocSpace, metric: str, reg: float, corpus: _Corpus, q: Doc, k):
    """Top-k for metrics without pruning (WCD, RWMD, Sinkhorn): every distance, then sort."""
    if q.empty or not len(corpus.valid):
        return []
    if metric == "wcd":
        d = corpus.bound_centroid(q)
    else:
        fn = space.measure(metric, reg)
        d = np.array([fn(q, corpus.docs[j]) for j in corpus.valid])
    order = np.lexsort((corpus.valid, d))[:k]
    return [(int(corpus.valid[o]), float(d[o])) for o in order]


def search_rows(
    queries: Iterable[Text | Doc],
    corpus: Iterable[Text | Doc] | None,
    vectors: Any = None,
    *,
    k: int = 10,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    prune: bool = True,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    exclude_self: bool = False,
    cluster: Any = None,
    weights: str | Weighting | WordWeights | None = None,
) -> Iterator[list[tuple[int, float]]]:
    """Yield, for each query in order, its ``k`` nearest corpus texts as ``(index, distance)``
    pairs, nearest first, ties by index (``corpus=None``: the queries themselves).

    WMD and WRD use exact prefetch-and-prune (``prune=False``: brute force, same answer);
    the other metrics compute every distance. Corpus texts without known words are never
    returned; a query without known words gets an empty list. With ``exclude_self`` corpus
    text ``i`` is never returned for query ``i`` (a collection searched against itself).
    ``jobs > 1`` searches blocks of queries in worker processes; ``cluster`` (see
    :mod:`kxtool.cluster`) on a Dask cluster, whose workers receive the corpus and queries as
    docs with only the vector rows they use, once; the answer is the same.
    ``weights`` counted from the texts are counted over the corpus (the queries are weighted
    with the corpus's weights).

    >>> rows = search_rows(["cat"], ["dog", "stock", "kitten"], default_vectors(), k=1)
    >>> [[j for j, _ in r] for r in rows]
    [[0]]
    """
    if k < 1:
        raise KxError(f"k must be at least 1, not {k}")
    if exclude_self:
        # the k + 1 nearest, less the query's own index if it is among them: exactly the k
        # nearest others, in the same order
        rows = search_rows(
            queries,
            corpus,
            vectors,
            k=k + 1,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            prune=prune,
            jobs=jobs,
            progress=progress,
            stats=stats,
            cluster=cluster,
            weights=weights,
        )
        for i, hits in enumerate(rows):
            yield [(j, d) for j, d in hits if j != i][:k]
        return
    if metric == "sinkhorn":
        _check_reg(reg)
    st = stats if stats is not None else WmdStats()
    space, Q, C = _prepare_two(
        queries, corpus, vectors, metric, tokenizer, st, weights, fit_on="b"
    )
    if cluster is not None and metric in ("wmd", "wrd"):
        from .space import pack_space

        space, (Q, C) = pack_space(space, Q, C)
    corp = _Corpus(space, C)
    n = len(Q)
    if metric not in ("wmd", "wrd"):
        for i, q in enumerate(Q):
            yield _search_brute_metric(space, metric, reg, corp, q, k)
            if progress is not None:
                progress("queries", i + 1, n)
        return
    jobs = parallel.resolve_jobs(jobs) if n > 1 else 1
    done = 0
    context = dict(corpus=corp, Q=Q, k=k, prune=prune)
    with parallel.executor(jobs, context, cluster=cluster) as ex:
        if cluster is not None:
            jobs = ex.jobs
        per = max(1, min(32, n // (8 * jobs) or 1)) if jobs > 1 else 1
        for res, s in ex.map(_search_chunk, parallel.chunked(range(n), per), window=4 * jobs):
            st.merge(s)
            for r in res:
                done += 1
                if progress is not None:
                    progress("queries", done, n)
                yield r


def wmd_search(
    queries: Iterable[Text | Doc],
    corpus: Iterable[Text | Doc] | None = None,
    vectors: Any = None,
    *,
    k: int = 10,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    prune: bool = True,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    exclude_self: bool = False,
    cluster: Any = None,
    weights: str | Weighting | WordWeights | None = None,
) -> list[list[tuple[int, float]]]:
    """The ``k`` nearest corpus texts of every query (see :func:`search_rows`).

    >>> hits = wmd_search(["the cat sat on the mat", "stocks fell"],
    ...                   ["a dog lay on a rug", "markets dropped today", "the kitten sat"],
    ...                   default_vectors(), k=2)
    >>> [[j for j, _ in h] for h in hits]  # corpus indices, nearest first
    [[2, 0], [1, 0]]
    """
    return list(
        search_rows(
            queries,
            corpus,
            vectors,
            k=k,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            prune=prune,
            jobs=jobs,
            progress=progress,
            stats=stats,
            exclude_self=exclude_self,
            cluster=cluster,
            weights=weights,
        )
    )
