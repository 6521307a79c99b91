"""`kxtool wmd`: Word Mover's / Word Rotator's Distance between texts."""

from __future__ import annotations

import itertools
import os
import stat
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import typer

from ._app import (
    CLUSTER_HELP,
    Bars,
    choices,
    cluster_connection,
    cluster_option,
    command,
    err,
    print_json,
    warn,
)

_METRICS = ("wmd", "wrd", "wcd", "rwmd", "sinkhorn")
_LANGS = ("auto", "zh", "en")
_WEIGHTS = ("none", "idf", "sif")
_DEFAULT_WEIGHTS = "sif"
_MATRIX_DTYPES = ("float32", "float64")
_SOLVERS = {
    "kxtool": "kxtool's compiled network simplex",
    "pot": "POT's network simplex (kxtool's compiled solver is not built)",
}

_HELP = """Distance between texts over word vectors: WMD, WRD and their bounds.

A and B are files with one text per line ('-' is stdin; .gz/.bz2/.xz/.zst are read as such;
URLs such as s3://bucket/corpus.txt.gz with pip install 'kxtool[remote]'). By default line i
of A is compared with line i of B and one score is printed per line, as the lines are read;
the two files must have the same number of lines.

\b
Metrics (--metric):
  wmd       Word Mover's Distance (Kusner et al. 2015): word counts as mass,
            Euclidean cost between word vectors.
  wrd       Word Rotator's Distance (Yokoi et al. 2020): mass proportional to the
            vector norms, cost 1 - cosine; in [0, 2]. --similarity prints 1 - WRD.
  wcd       word centroid distance, a fast lower bound of WMD.
  rwmd      relaxed WMD, a tighter lower bound of WMD.
  sinkhorn  entropic-regularised WMD (--reg), solved in the log domain.

Texts are cut with jieba when they contain Chinese characters and with a word regex
otherwise, lowercased, and stripped of stopwords (standard lists: spaCy's English, Stopwords
ISO Chinese, negations kept). A Chinese word missing from the vectors backs off to its longest
pieces that are there, then its characters, which share its count; other missing words are
dropped (--verbose counts both). A text with no known word scores nan (null in JSON).

\b
Word weights (--weights) multiply each word's count before the mass is normalised, in
every metric and mode (for WRD: count x weight x vector norm, as in Yokoi et al.):
  none  every word weighs 1 (Kusner et al.'s nBOW).
  idf   ln((1 + N) / (1 + df)) + 1 over the N texts (both sides; the corpus of --top),
        or over a document-frequency file (--doc-frequencies).
  sif   a / (a + p(word)) (Arora et al. 2017; a: --sif-a), p from --frequencies: Zipf's
        law over the vectors' word order (rank, the default), the texts, or a FILE.
The default, sif over the vectors' word order, agreed best with human similarity ratings
in benchmarks/bench_wmd_quality.py (BENCHMARKS.md, "WMD quality"), and needs no pass over
the texts. Weights counted from the texts read every text first (a paired run reads
regular files twice, and keeps stdin in memory).

Line numbers in --cross and --top output count from 1.

Examples:

\b
  kxtool wmd -t "Obama speaks to the media in Illinois" "The president greets the press"
  kxtool wmd -t "今天天气很好" "今天天气不错" --vectors zh.vec --metric wrd --similarity
  kxtool wmd questions.txt answers.txt --vectors glove.300d.txt -j 2 > scores.txt
  kxtool wmd --cross a.txt b.txt --json
  kxtool wmd --cross docs.txt docs.txt --matrix dist.npy > dist.tsv
  kxtool wmd a.txt b.txt --weights idf --doc-frequencies df.txt
  kxtool wmd a.txt b.txt --weights sif --frequencies counts.txt --sif-a 1e-4
  kxtool wmd a.txt b.txt --weights none     # Kusner's plain word counts
  kxtool wmd --top 10 queries.txt corpus.txt.gz
  kxtool wmd --top 3 --exclude-self corpus.txt corpus.txt   # near-duplicates
  kxtool wmd --top 10 queries.txt corpus.txt --cluster tcp://scheduler:8786
  cut -f1 pairs.tsv | kxtool wmd - <(cut -f2 pairs.tsv) | paste pairs.tsv -
"""


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.6f}"


def _lines(path: str, consumed: list[int] | None = None) -> Iterator[str]:
    """The lines of a text file (or '-', a pipe, or a compressed file), newline removed; a
    binary file (a line with NUL bytes) is an error naming the file and line."""
    from ..errors import KxError
    from ..textio import display_name, open_input

    with open_input(path) as f:
        for number, raw in enumerate(f, 1):
            if b"\0" in raw:
                raise KxError(f"{display_name(path)}:{number}: not text (it holds NUL bytes)")
            if consumed is not None:
                consumed[0] = f.consumed() or 0  # type: ignore[attr-defined]
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _read_all(path: str) -> list[str]:
    return list(_lines(path))


def _file_size(path: str) -> int | None:
    """The stored size of a regular file (what :func:`_lines` reports progress against)."""
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def _lockstep(
    path_a: str,
    path_b: str,
    counter: list[int],
    pending: deque[tuple[str, str]],
    consumed: list[int] | None = None,
    texts: tuple[list[str], list[str]] | None = None,
) -> tuple[Iterator[str], Iterator[str]]:
    """Two iterators over the lines of A and B that fail, naming the shorter file, when one
    ends before the other. ``counter[0]`` counts the pairs handed out, and each pair handed
    out is appended to ``pending`` (the caller takes them off as their scores arrive)."""
    from ..errors import KxError
    from ..textio import display_name

    sentinel = None
    if texts is None:
        ia, ib = _lines(path_a, consumed), _lines(path_b)
    else:
        ia, ib = iter(texts[0]), iter(texts[1])
    buf: list[str] = []

    def gen_a() -> Iterator[str]:
        while True:
            x = next(ia, sentinel)
            y = next(ib, sentinel)
            if x is None and y is None:
                return
            if x is None or y is None:
                n = counter[0]
                short, long_ = (path_a, path_b) if x is None else (path_b, path_a)
                raise KxError(
                    f"{display_name(short)!r} has {n} lines but {display_name(long_)!r} has more:"
                    " paired mode needs the same number of lines (--cross compares all pairs)"
                )
            counter[0] += 1
            buf.append(y)
            pending.append((x, y))
            yield x

    class _B:
        def __iter__(self) -> Iterator[str]:
            return self

        def __next__(self) -> str:
            if buf:
                return buf.pop(0)
            raise StopIteration

    return gen_a(), _B()  # type: ignore[return-value]


def _s(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _validate(
    metric: str, lang: str, similarity: bool, cross: bool, top: int | None, text: bool, reg: float
) -> None:
    if metric not in _METRICS:
        raise typer.BadParameter(
            f"{metric!r} is not one of {', '.join(_METRICS)}", param_hint="--metric"
        )
    if lang not in _LANGS:
        raise typer.BadParameter(f"{lang!r} is not one of {', '.join(_LANGS)}", param_hint="--lang")
    if similarity and metric != "wrd":
        raise typer.BadParameter(
            "--similarity (1 - WRD) needs --metric wrd", param_hint="--similarity"
        )
    if cross and top is not None:
        raise typer.BadParameter("--cross and --top exclude each other", param_hint="--top")
    if text and (cross or top is not None):
        raise typer.BadParameter(
            "-t/--text compares two texts; --cross and --top take files", param_hint="--text"
        )
    if top is not None and top < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--top")
    if not (reg > 0):
        raise typer.BadParameter("must be greater than zero", param_hint="--reg")


def _validate_weights(
    weights: str, sif_a: float, frequencies: str | None, doc_frequencies: str | None
) -> None:
    if weights not in _WEIGHTS:
        raise typer.BadParameter(
            f"{weights!r} is not one of {', '.join(_WEIGHTS)}", param_hint="--weights"
        )
    if not (sif_a > 0 and sif_a < float("inf")):
        raise typer.BadParameter("must be greater than zero", param_hint="--sif-a")
    if frequencies is not None and weights != "sif":
        raise typer.BadParameter("word frequencies are for --weights sif",
                                 param_hint="--frequencies")
    if doc_frequencies is not None and weights != "idf":
        raise typer.BadParameter("document frequencies are for --weights idf",
                                 param_hint="--doc-frequencies")


class _MatrixWriter:
    """The rows of an all-pairs run written as they come into a ``.npy`` file (atomically,
    through :class:`~kxtool.textio.outputs.AtomicOutputs`): memory holds one row."""

    def __init__(self, path: str, shape: tuple[int, int], dtype: str) -> None:
        import numpy as np

        from ..textio.outputs import AtomicOutputs

        self.np = np
        self.dtype = np.dtype(dtype)
        self.outs = AtomicOutputs()
        self.outs.__enter__()
        try:
            self.f = self.outs.open(path)
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(self.f, header)
        except BaseException as e:
            self.outs.__exit__(type(e), e, e.__traceback__)
            raise

    def write(self, row: Any) -> None:
        self.f.write(self.np.asarray(row, dtype=self.dtype).tobytes())

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            self.outs.__exit__(None, None, None)
        else:
            self.outs.__exit__(type(error), error, error.__traceback__)


def _empty_kinds(tokenizer: Any, texts: Iterable[str]) -> Counter[str]:
    """How many of ``texts`` have no tokens because they have only stopwords, or no words."""
    kinds: Counter[str] = Counter()
    for t in texts:
        kept, dropped = tokenizer.split(t)
        if not kept:
            kinds["only stopwords" if dropped else "no words"] += 1
    return kinds


def _report(
    stats: Any, verbose: bool, consequence: str, empty: Callable[[], Counter[str]] | None = None
) -> None:
    """Warn about texts without a known word (``empty()`` counts those that have only
    stopwords or no words, called only when there are any) and, with ``verbose``, report the
    tokens and unknown words."""
    if stats.empty_texts:
        n = stats.empty_texts
        kinds = empty() if empty is not None else Counter()
        parts = [(k, kinds[k]) for k in ("only stopwords", "no words") if kinds[k]]
        unknown = n - sum(c for _, c in parts)
        if unknown > 0:
            parts.append(("no word found in the vectors", unknown))
        if len(parts) == 1:
            what, c = parts[0]
            warn(f"{c} of {stats.texts} texts {_s(c, 'has', 'have')} {what}: {consequence}")
        else:
            listed = ", ".join(f"{c} {_s(c, 'has', 'have')} {what}" for what, c in parts)
            warn(f"of {stats.texts} texts, {listed}: {consequence}")
    if not verbose:
        return
    share = 100.0 * stats.oov_tokens / stats.tokens if stats.tokens else 0.0
    err(
        f"kxtool: {stats.texts} texts, {stats.tokens} tokens, {stats.oov_tokens} out of"
        f" vocabulary ({share:.1f}%) dropped"
    )
    if stats.oov_words:
        common = ", ".join(f"{w} ({n})" for w, n in stats.oov_words.most_common(10))
        err(f"kxtool: most frequent unknown words: {common}")
    if stats.backoff_tokens:
        common = ", ".join(f"{w} ({n})" for w, n in stats.backoff_words.most_common(10))
        n = stats.backoff_tokens
        err(
            f"kxtool: {n} unknown Chinese {_s(n, 'token', 'tokens')} backed off to"
            f" {_s(n, 'its', 'their')} pieces: {common}"
        )
    if stats.mixed_texts:
        err(f"kxtool: {stats.mixed_texts} mixed-script texts: their Chinese words dropped")
    if stats.candidates:
        err(
            f"kxtool: search: {stats.exact} exact distances for {stats.candidates} candidates"
            f" ({stats.pruned} pruned by WCD/RWMD)"
        )


@command("wmd", help=_HELP)
def wmd_command(
    a: str = typer.Argument(..., metavar="A", help="File of texts, one a line ('-': stdin)."),
    b: str = typer.Argument(..., metavar="B", help="File of texts, one a line ('-': stdin)."),
    text: bool = typer.Option(
        False, "--text", "-t", help="A and B are the two texts themselves, not files."
    ),
    cross: bool = typer.Option(
        False, "--cross", help="Every line of A against every line of B: i<TAB>j<TAB>score."
    ),
    top: int = typer.Option(
        None,
        "--top",
        "-k",
        metavar="K",
        help="For each line of A, the K nearest lines of B: i<TAB>j<TAB>score (exact).",
    ),
    exclude_self: bool = typer.Option(
        False,
        "--exclude-self",
        help="With --top: never pair line i of A with line i of B (a file searched against"
        " itself).",
    ),
    metric: str = typer.Option(
        "wmd",
        "--metric",
        "-m",
        metavar="METRIC",
        autocompletion=choices(*_METRICS),
        help="wmd, wrd, wcd, rwmd or sinkhorn.",
    ),
    vectors: str = typer.Option(
        None,
        "--vectors",
        metavar="FILE",
        help="Word vectors (word2vec text/binary, GloVe, fastText .vec, .gz). "
        "Default: $KXTOOL_VECTORS, else the built-in English GloVe 50d.",
    ),
    limit: int = typer.Option(
        None, "--limit", metavar="N", help="Use only the first N words of the vectors."
    ),
    similarity: bool = typer.Option(
        False, "--similarity", help="Print 1 - WRD instead of WRD (with --metric wrd)."
    ),
    reg: float = typer.Option(
        0.1, "--reg", metavar="R", help="Entropic regularisation of --metric sinkhorn."
    ),
    lang: str = typer.Option(
        "auto",
        "--lang",
        metavar="LANG",
        autocompletion=choices(*_LANGS),
        help="Tokeniser: auto (jieba for Chinese), zh or en.",
    ),
    keep_case: bool = typer.Option(False, "--keep-case", help="Do not lowercase the texts."),
    stopwords: str = typer.Option(
        "default",
        "--stopwords",
        metavar="WORDS",
        help="default (built-in English and Chinese), none, or a file with one word a line.",
    ),
    weights: str = typer.Option(
        _DEFAULT_WEIGHTS,
        "--weights",
        metavar="WEIGHTS",
        autocompletion=choices(*_WEIGHTS),
        help=f"Word weights: none, idf or sif (default {_DEFAULT_WEIGHTS}: it ranked texts"
        " closest to human ratings, see above).",
    ),
    sif_a: float = typer.Option(
        1e-3, "--sif-a", metavar="A", help="The constant a of --weights sif: a / (a + p(word))."
    ),
    frequencies: str = typer.Option(
        None,
        "--frequencies",
        metavar="SOURCE",
        help="Where --weights sif takes p(word) from: rank (the default: Zipf's law over the"
        " vectors' word order, most frequent first), texts (count the texts), or a FILE of"
        " 'word count' lines (any size).",
    ),
    doc_frequencies: str = typer.Option(
        None,
        "--doc-frequencies",
        metavar="FILE",
        help="Document frequencies for --weights idf: 'word df' a line and one '<documents> N'"
        " line (default: count the texts).",
    ),
    matrix: str = typer.Option(
        None,
        "--matrix",
        metavar="FILE.npy",
        help="With --cross: also write the whole distance matrix to FILE.npy (row by row;"
        " numpy.load(FILE, mmap_mode='r') reads it).",
    ),
    matrix_dtype: str = typer.Option(
        "float32",
        "--matrix-dtype",
        metavar="TYPE",
        autocompletion=choices(*_MATRIX_DTYPES),
        help="float32 or float64: the number type of --matrix.",
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", metavar="N", help="Worker processes (0: one per CPU)."
    ),
    cluster: str | None = cluster_option(
        CLUSTER_HELP + " Paired mode, --cross and --top (wmd and wrd) run there."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per line)."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Report tokens, unknown words and search work on stderr."
    ),
) -> None:
    if "numpy" not in sys.modules:
        # The matrices here are small: BLAS threads would only fight each other and the
        # --jobs processes on a busy machine (set before numpy loads, or it has no effect).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    from .. import transport
    from ..errors import KxError
    from ..text import Tokenizer
    from ..vectors import resolve_vectors
    from ..wmd import DocSpace, Weighting, WmdStats, search_rows

    _validate(metric, lang, similarity, cross, top, text, reg)
    _validate_weights(weights, sif_a, frequencies, doc_frequencies)
    if matrix is not None and not cross:
        raise typer.BadParameter("needs --cross", param_hint="--matrix")
    if matrix == "-":
        raise typer.BadParameter("the TSV goes to stdout: give a file", param_hint="--matrix")
    if matrix_dtype not in _MATRIX_DTYPES:
        raise typer.BadParameter(
            f"{matrix_dtype!r} is not one of {', '.join(_MATRIX_DTYPES)}",
            param_hint="--matrix-dtype",
        )
    if exclude_self and top is None:
        raise typer.BadParameter("needs --top", param_hint="--exclude-self")
    if jobs < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--jobs")
    if limit is not None and limit < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--limit")
    if not text and a == "-" and b == "-":
        raise KxError("A and B cannot both be stdin ('-')")

    tokenizer = Tokenizer(lang=lang, lowercase=not keep_case, stopwords=stopwords)
    if frequencies is None and weights == "sif":
        frequencies = "rank"
    weighting = Weighting(weights, sif_a, frequencies, doc_frequencies)
    with Bars(unit="B") as bars:
        vecs = resolve_vectors(vectors, limit=limit, progress=bars)
    if verbose:
        err(f"kxtool: vectors: {vecs.source} ({len(vecs)} words, {vecs.dim} dimensions)")
        err(f"kxtool: word weights: {weights}")
        if metric in ("wmd", "wrd"):
            err(f"kxtool: exact solver: {_SOLVERS[transport.solver()]}")
    stats = WmdStats()
    out = sys.stdout
    key = "similarity" if similarity else "distance"

    def value(d: float) -> float:
        return 1.0 - d if similarity else d

    if text:
        space = DocSpace(
            vecs, "cosine" if metric == "wrd" else "euclid", tokenizer, weights=weighting
        )
        space.stats = stats
        toks = [space.tokens(a), space.tokens(b)]
        space.fit_weights(toks)
        docs = [space.doc(t) for t in toks]
        d = value(space.measure(metric, reg)(docs[0], docs[1]))
        if as_json:
            index = vecs.index
            print_json(
                {
                    "metric": metric,
                    key: d,
                    "tokens": [[t for t in ts if t in index] for ts in toks],
                    "oov": [[t for t in ts if t not in index] for ts in toks],
                }
            )
        else:
            out.write(_fmt(d) + "\n")
        if verbose:
            index = vecs.index
            backed = stats.backoff_words
            for name, ts in zip("AB", toks, strict=True):
                known = " ".join(t for t in ts if t in index) or "-"
                unknown = " ".join(t for t in ts if t not in index and t not in backed) or "-"
                err(f"kxtool: {name}: {known}  [unknown: {unknown}]")
            if backed:
                words = vecs.words
                shown = ", ".join(
                    f"{w} ({n}) -> {' '.join(words[i] for i in space.pieces(w))}"
                    for w, n in backed.items()
                )
                err(f"kxtool: unknown Chinese words backed off to their pieces: {shown}")
        _report(stats, False, "the score is nan", lambda: _empty_kinds(tokenizer, [a, b]))
        return

    # what the paired, cross and top-k engines all take
    options = {
        "metric": metric,
        "tokenizer": tokenizer,
        "reg": reg,
        "jobs": jobs,
        "stats": stats,
        "weights": weighting,
    }
    with cluster_connection(cluster) as connection:
        if connection is not None:
            options["cluster"] = connection
        if top is not None:
            same = a == b and a != "-"
            queries = _read_all(a)
            corpus = None if same else _read_all(b)
            nan = 0
            with Bars(unit="query") as bars:
                rows = search_rows(
                    queries,
                    corpus,
                    vecs,
                    k=top,
                    progress=bars,
                    exclude_self=exclude_self,
                    **options,
                )
                for i, hits in enumerate(rows, 1):
                    if not hits:
                        nan += 1
                    if as_json:
                        print_json(
                            {
                                "line": i,
                                "neighbors": [{"line": j + 1, key: value(d)} for j, d in hits],
                            }
                        )
                    else:
                        out.write("".join(f"{i}\t{j + 1}\t{_fmt(value(d))}\n" for j, d in hits))
            out.flush()
            _report(
                stats,
                verbose,
                f"{nan} {_s(nan, 'query has', 'queries have')} no neighbours",
                lambda: _empty_kinds(tokenizer, queries + (corpus or [])),
            )
            return

        if cross:
            same = a == b and a != "-"
            texts_a = _read_all(a)
            texts_b = None if same else _read_all(b)
            nan = 0
            writer = None
            if matrix is not None:
                shape = (len(texts_a), len(texts_a if texts_b is None else texts_b))
                writer = _MatrixWriter(matrix, shape, matrix_dtype)
            failed: BaseException | None = None
            try:
                nan = _cross_out(
                    texts_a, texts_b, vecs, options, value, writer, as_json, key
                )
            except BaseException as e:
                failed = e
                raise
            finally:
                if writer is not None:
                    writer.close(failed)
            out.flush()
            _report(
                stats,
                verbose,
                f"{nan} {_s(nan, 'score is', 'scores are')} nan",
                lambda: _empty_kinds(tokenizer, texts_a + (texts_b or [])),
            )
            return

        counter = [0]
        pending: deque[tuple[str, str]] = deque()  # the pairs handed out and not yet scored
        consumed = [0]  # bytes of A read so far: a bar with a total when A's size is known
        pre: tuple[list[str], list[str]] | None = None
        if weighting.needs_texts and weighting.scheme != "none":
            # weights counted over both files: a first pass over regular files, stdin kept
            fit = DocSpace(vecs, "cosine" if metric == "wrd" else "euclid", tokenizer,
                           weights=weighting)
            if _file_size(a) is not None and _file_size(b) is not None:
                fitted = fit.fit_weights(itertools.chain(_lines(a), _lines(b)))
            else:
                pre = (_read_all(a), _read_all(b))
                fitted = fit.fit_weights(itertools.chain(*pre))
            options["weights"] = fitted
        size = _file_size(a) if pre is None else None
        ia, ib = _lockstep(a, b, counter, pending, consumed, pre)
        _paired_out(ia, ib, vecs, options, value, pending, size, consumed, tokenizer,
                    as_json, key, stats, verbose)


def _cross_out(
    texts_a: list[str],
    texts_b: list[str] | None,
    vecs: Any,
    options: dict[str, Any],
    value: Callable[[float], float],
    writer: _MatrixWriter | None,
    as_json: bool,
    key: str,
) -> int:
    """Print the rows of an all-pairs run (and write them to ``writer``); the nan count."""
    from ..wmd import cross_rows

    out = sys.stdout
    nan = 0
    with Bars(unit="pair") as bars:
        for i, row in enumerate(cross_rows(texts_a, texts_b, vecs, progress=bars, **options), 1):
            vals = [value(float(x)) for x in row]
            if writer is not None:
                writer.write(vals)
            nan += sum(1 for x in vals if x != x)
            if as_json:
                for j, x in enumerate(vals, 1):
                    print_json({"a": i, "b": j, key: x})
            else:
                out.write("".join(f"{i}\t{j}\t{_fmt(x)}\n" for j, x in enumerate(vals, 1)))
    return nan


def _paired_out(
    ia: Iterator[str],
    ib: Iterator[str],
    vecs: Any,
    options: dict[str, Any],
    value: Callable[[float], float],
    pending: deque[tuple[str, str]],
    size: int | None,
    consumed: list[int],
    tokenizer: Any,
    as_json: bool,
    key: str,
    stats: Any,
    verbose: bool,
) -> None:
    """Print the scores of a paired run as they come, then the report."""
    from ..wmd import wmd_pairs

    out = sys.stdout
    nan = 0
    empty: Counter[str] = Counter()  # texts of nan pairs with only stopwords or no words
    with Bars(unit="B" if size else "pair") as bars:
        scores = wmd_pairs(
            ia,
            ib,
            vecs,
            progress=None if size else bars,
            **options,
        )
        for i, d in enumerate(scores, 1):
            if size and i % 256 == 0:
                bars("reading A", consumed[0], size)
            x = value(d)
            pair = pending.popleft()
            if x != x:
                nan += 1
                empty.update(_empty_kinds(tokenizer, pair))
            if as_json:
                print_json({"line": i, key: x})
            else:
                out.write(_fmt(x) + "\n")
    out.flush()
    _report(stats, verbose, f"{nan} {_s(nan, 'score is', 'scores are')} nan", lambda: empty)
