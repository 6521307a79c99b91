"""The batch modes: paired (line i of A against line i of B, streaming) and all pairs (every
text of A against every text of B), in this process or in worker processes through
:mod:`kxtool.parallel`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import parallel
from ..errors import KxError
from ..progress import Progress
from ..text import Tokenizer, has_cjk
from .space import (
    _NAN,
    DEFAULT_REG,
    Doc,
    DocSpace,
    Text,
    WmdStats,
    _centroids,
    _check_reg,
    _kind,
    _prepare_two,
)
from .weights import Weighting, WordWeights

Weights = str | Weighting | WordWeights | None

# ---------------------------------------------------------------------------------------------
# paired: line i of A against line i of B


def _zip_strict(a: Iterable[Any], b: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    ia, ib = iter(a), iter(b)
    sentinel = object()
    while True:
        x = next(ia, sentinel)
        y = next(ib, sentinel)
        if x is sentinel and y is sentinel:
            return
        if x is sentinel or y is sentinel:
            short = "first" if x is sentinel else "second"
            raise KxError(f"the two inputs differ in length: the {short} one is shorter")
        yield x, y


def _pairs_chunk(
    work: tuple[DocSpace, Any], chunk: list[tuple[Text, Text]]
) -> tuple[list[float], WmdStats]:
    """A task: the scores of a chunk of pairs (and what their texts held)."""
    space, fn = work
    space.stats = WmdStats()
    doc = space.doc
    out = [fn(doc(x), doc(y)) for x, y in chunk]
    return out, space.stats


def wmd_pairs(
    texts_a: Iterable[Text],
    texts_b: Iterable[Text],
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    chunk_size: int = 128,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    cluster: Any = None,
    weights: Weights = None,
) -> Iterator[float]:
    """Yield ``metric`` between ``texts_a[i]`` and ``texts_b[i]``, in order, as they are read.

    Both iterables are consumed in lockstep (they may be huge); differing lengths raise
    :class:`KxError` (when the shorter one runs out). ``nan`` for a pair with a text without
    known words. ``jobs > 1`` computes chunks of pairs in forked worker processes; ``cluster``
    (see :mod:`kxtool.cluster`) on a Dask cluster instead: texts are read and tokenised here and
    each chunk travels with the vector rows of its own words. ``stats``, when given, is filled
    with token and OOV counts. ``weights`` (``"none"``, ``"idf"``, ``"sif"``, a
    :class:`~kxtool.wmd.Weighting` or fitted :class:`~kxtool.wmd.WordWeights`) weighs the
    words; weights counted from the texts read both inputs whole first.

    >>> v = default_vectors()
    >>> [round(d, 4) for d in wmd_pairs(["the cat sat", "stocks fell sharply"],
    ...                                 ["a dog sat", "markets dropped"], v)]
    [0.9422, 3.3087]
    """
    if metric == "sinkhorn":
        _check_reg(reg)
    space = DocSpace(vectors, _kind(metric), tokenizer, weights=weights)
    fn = space.measure(metric, reg)
    total = stats if stats is not None else WmdStats()
    wt = space.weighting
    if isinstance(wt, Weighting) and wt.needs_texts and wt.scheme != "none":
        # counted over both sides: every text is read (and tokenised once) first
        space.stats = total
        bags = [(space.bag(x), space.bag(y)) for x, y in _zip_strict(texts_a, texts_b)]
        space.fit_weights(bags=[b for pair in bags for b in pair])
        texts_a = [space.doc_of_bag(x) for x, _ in bags]
        texts_b = [space.doc_of_bag(y) for _, y in bags]
        del bags
    pairs = _zip_strict(texts_a, texts_b)
    if cluster is not None:
        yield from _pairs_on_cluster(space, metric, reg, pairs, chunk_size, cluster, total,
                                     progress)
        return
    jobs = parallel.resolve_jobs(jobs)
    done = 0
    chunks: Iterator[list[tuple[Text, Text]]] = iter(())
    if jobs > 1:
        chunks = parallel.chunked(pairs, chunk_size)
        first = next(chunks, None)
        if first is None:
            jobs = 1
        else:
            chunks = itertools.chain([first], chunks)
            _warm_tokenizer(space.tokenizer, first)
    with parallel.executor(jobs, (space, fn)) as ex:
        if ex.jobs == 1:  # pair by pair, so that each score comes out as its lines are read
            space.stats = total
            for x, y in itertools.chain(itertools.chain.from_iterable(chunks), pairs):
                yield fn(space.doc(x), space.doc(y))
                done += 1
                if progress is not None and done % 256 == 0:
                    progress("pairs", done, None)
        else:
            results = ex.map(_pairs_chunk, chunks, window=4 * jobs)
            for scores, st in results:
                total.merge(st)
                yield from scores
                done += len(scores)
                if progress is not None:
                    progress("pairs", done, None)
    if progress is not None:
        progress("pairs", done, done)


def _packed_pairs(
    space: DocSpace, pairs: Iterator[tuple[Text, Text]], size: int
) -> Iterator[tuple[DocSpace, list[Doc], list[Doc]]]:
    """Chunks of pairs as docs, each with a packed space of only the rows its docs use."""
    from .space import pack_space

    for chunk in parallel.chunked(pairs, size):
        a = [space.doc(x) for x, _ in chunk]
        b = [space.doc(y) for _, y in chunk]
        small, (pa, pb) = pack_space(space, a, b)
        yield small, pa, pb


def _pairs_docs(work: tuple[str, float], item: tuple[DocSpace, list[Doc], list[Doc]]):
    """A cluster task: the scores of a chunk of pairs of docs over their packed space."""
    metric, reg = work
    small, a, b = item
    fn = small.measure(metric, reg)
    return [fn(x, y) for x, y in zip(a, b, strict=True)]


def _pairs_on_cluster(
    space: DocSpace,
    metric: str,
    reg: float,
    pairs: Iterator[tuple[Text, Text]],
    chunk_size: int,
    cluster: Any,
    total: WmdStats,
    progress: Progress | None,
) -> Iterator[float]:
    space.stats = total
    done = 0
    with parallel.executor(None, (metric, reg), cluster=cluster) as ex:
        for scores in ex.map(_pairs_docs, _packed_pairs(space, pairs, chunk_size)):
            yield from scores
            done += len(scores)
            if progress is not None:
                progress("pairs", done, None)
    if progress is not None:
        progress("pairs", done, done)


def _warm_tokenizer(tok: Tokenizer, sample: list[tuple[Text, Text]]) -> None:
    """Load jieba in the parent (once, not once per worker) when Chinese text is coming."""
    if tok.lang == "zh" or (
        tok.lang == "auto"
        and any(isinstance(t, str) and has_cjk(t) for pair in sample for t in pair)
    ):
        from ..text import warm_up

        warm_up()


# ---------------------------------------------------------------------------------------------
# all pairs


def _cross_row(work: dict[str, Any], i: int) -> np.ndarray:
    """A task: row ``i`` of the all-pairs matrix."""
    fn = work["fn"]
    a = work["A"][i]
    B = work["B"]
    if work["metric"] == "wcd":
        return _wcd_row(work["space"], work["cent"], a, B)
    return np.fromiter((fn(a, b) for b in B), dtype=np.float64, count=len(B))


def _cross_rows_chunk(work: dict[str, Any], rows: list[int]) -> list[np.ndarray]:
    return [_cross_row(work, i) for i in rows]


def _wcd_row(
    space: DocSpace, cent: tuple[np.ndarray, np.ndarray], a: Doc, B: Sequence[Doc]
) -> np.ndarray:
    C, ok = cent
    if a.empty:
        return np.full(len(B), _NAN)
    D = C - space.centroid(a)
    s = np.einsum("ij,ij->i", D, D)
    out = np.sqrt(s) if space.kind == "euclid" else 0.5 * s
    out[~ok] = _NAN
    return out


def cross_rows(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None,
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    cluster: Any = None,
    weights: Weights = None,
) -> Iterator[np.ndarray]:
    """Yield, for each text of A, the array of its ``metric`` to every text of B (``None``:
    B is A). All texts are read and prepared first; rows are computed in order (in worker
    processes with ``jobs > 1``; on a Dask cluster with ``cluster``, whose workers receive
    the docs and only the vector rows they use, once). ``weights`` counted from the texts are
    counted over A and B.

    >>> [row.round(3).tolist() for row in cross_rows(["cat"], ["dog", "kitten"], default_vectors())]
    [[1.884, 1.946]]
    """
    if metric == "sinkhorn":
        _check_reg(reg)
    space, A, B = _prepare_two(texts_a, texts_b, vectors, metric, tokenizer, stats, weights)
    fn = space.measure(metric, reg)
    total = len(A) * len(B)
    jobs = parallel.resolve_jobs(jobs) if len(A) > 1 else 1
    if cluster is not None:
        from .space import pack_space

        space, (A, B) = pack_space(space, A, B)
        fn = space.measure(metric, reg)
    work = dict(space=space, fn=fn, A=A, B=B, metric=metric)
    if metric == "wcd":
        work["cent"] = _centroids(space, B)
    done = 0
    with parallel.executor(jobs, work, cluster=cluster) as ex:
        if cluster is not None:
            jobs = ex.jobs
        per = max(1, min(64, len(A) // (8 * jobs) or 1)) if jobs > 1 else 1
        chunks = parallel.chunked(range(len(A)), per)
        for rows in ex.map(_cross_rows_chunk, chunks, window=4 * jobs):
                for row in rows:
                    done += len(B)
                    if progress is not None:
                        progress("pairs", done, total)
                    yield row


def wmd_cross(
    texts_a: Iterable[Text | Doc],
    texts_b: Iterable[Text | Doc] | None = None,
    vectors: Any = None,
    *,
    metric: str = "wmd",
    tokenizer: Tokenizer | None = None,
    reg: float = DEFAULT_REG,
    jobs: int = 1,
    progress: Progress | None = None,
    stats: WmdStats | None = None,
    cluster: Any = None,
    weights: Weights = None,
) -> np.ndarray:
    """The ``(len(A), len(B))`` matrix of ``metric`` between every text of A and of B
    (``texts_b=None``: A against itself). ``nan`` where a text has no known word.

    >>> wmd_cross(["cat", "stock market"], ["dog", "shares"], default_vectors()).round(3)
    array([[1.884, 7.123],
           [6.63 , 3.55 ]])
    """
    A = list(texts_a)
    B = None if texts_b is None else list(texts_b)
    nb = len(A) if B is None else len(B)
    rows = list(
        cross_rows(
            A,
            B,
            vectors,
            metric=metric,
            tokenizer=tokenizer,
            reg=reg,
            jobs=jobs,
            progress=progress,
            stats=stats,
            cluster=cluster,
            weights=weights,
        )
    )
    return np.array(rows, dtype=np.float64).reshape(len(A), nb)
