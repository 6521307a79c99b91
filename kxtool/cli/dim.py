"""`kxtool dim`: how many dimensions word vectors need for a vocabulary (or a corpus)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from ._app import Bars, choices, command, deprecated_flag, parse_count, print_json

_CLOSED = ("entropy", "entropy-analytic", "jl", "fourth-root")
_CHOICES = (*_CLOSED, "all", "pip")

_HELP = """Estimate the dimension word vectors need for a vocabulary of N words.

N comes from --vocab (repeatable), --vectors FILE (the word2vec header, or the loaded file) or
--corpus FILE (distinct tokens, cut as `kxtool wmd` cuts them, stopwords kept, --min-count).

Methods (--method), each with its source:

entropy: n > 8.33 ln N, the smallest whole n. Su Jianlin (苏剑林),
"最小熵原理(六):词向量的维度应该怎么选择?", kexue.fm/archives/7695 (2020-08-20).
N=100,000 gives 96; N=5,000,000 gives 129 (bound 128.5).

entropy-analytic: n > (4/ln phi) ln N = 8.3123 ln N, the same derivation with its analytic
constant (phi the golden ratio).

jl: k >= 4 ln N / (eps^2/2 - eps^3/3), the Johnson-Lindenstrauss lemma as proved by Dasgupta &
Gupta (2003); --eps 0.1 is scikit-learn's default for johnson_lindenstrauss_min_dim.

fourth-root: n ~ N^(1/4), rounded up, the rule of thumb of Google's ML guidance
(TensorFlow feature-columns blog, 2017).

all: the four above as a table.

pip (needs --corpus): the dimension minimising the PIP loss of Yin & Shen, "On the
Dimensionality of Word Embedding" (NeurIPS 2018), from the PMI matrix of the --top words
(window --window), its spectrum and the noise level measured between two halves of the corpus.

Examples:

\b
  kxtool dim --vocab 100000
  kxtool dim --vocab 100000 --vocab 5000000 --method all
  kxtool dim --vectors GoogleNews-vectors-negative300.bin
  kxtool dim --corpus wiki.txt.gz --min-count 5
  kxtool dim --method pip --corpus wiki.txt --top 10000 --json
"""


def _progress_router() -> tuple[Any, Any]:
    """One progress callback drawing byte phases in bytes and the others in steps."""
    steps = ("co-occurrence", "spectrum", "simulation")
    bars = Bars(unit=lambda phase: "it" if phase.startswith(steps) else "B")
    return bars, bars.close


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _table(headers: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(*headers, caption=caption)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


@command("dim", help=_HELP)
def dim_command(
    vocab: list[str] = typer.Option(
        None,
        "--vocab",
        metavar="N",
        help="A vocabulary size N (repeat for a table): 100000, 100_000, 100,000 or 1e5.",
    ),
    vocab_short: list[str] = typer.Option(None, "-n", hidden=True),
    vectors: list[str] = typer.Option(
        None,
        "--vectors",
        metavar="FILE",
        help="Take N from a vectors file (word2vec, GloVe, fastText; '-').",
    ),
    corpus: list[str] = typer.Option(
        None,
        "--corpus",
        metavar="FILE",
        help="Take N from a corpus: its distinct tokens (.gz/.bz2/.xz/.zst, '-').",
    ),
    method: str = typer.Option(
        "entropy",
        "--method",
        metavar="METHOD",
        autocompletion=choices(*_CHOICES),
        help="entropy, entropy-analytic, jl, fourth-root, all, or pip (with --corpus).",
    ),
    eps: float = typer.Option(
        0.1, "--eps", metavar="EPS", help="Distortion for the jl bound, 0 < eps < 1."
    ),
    min_count: int = typer.Option(
        1,
        "--min-count",
        metavar="N",
        help="Count only tokens seen at least this many times (--corpus).",
    ),
    lang: str = typer.Option(
        "auto",
        "--lang",
        metavar="LANG",
        autocompletion=choices("auto", "zh", "en"),
        help="Tokeniser language: auto, zh or en.",
    ),
    stopwords: str = typer.Option(
        "none",
        "--stopwords",
        metavar="WORDS",
        help="Words to drop before counting: none, default or a file.",
    ),
    top: int = typer.Option(
        10_000, "--top", metavar="V", help="pip: the vocabulary V, most frequent words."
    ),
    window: int = typer.Option(
        5, "--window", metavar="W", help="pip: co-occurrence window (each side)."
    ),
    alpha: float = typer.Option(
        0.5, "--alpha", metavar="A", help="pip: the embedding exponent alpha."
    ),
    max_dim: int = typer.Option(
        None,
        "--max-dim",
        metavar="K",
        min=1,
        help="pip: compute the PIP-loss curve up to this k only (at least 1). A minimum at K "
        "itself is reported as such: the loss may fall further.",
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="pip: seed of the randomised steps."),
    tmp_dir: str = typer.Option(
        None, "--tmp-dir", metavar="DIR", help="pip: directory for the temporary token-id file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    method_short: str = typer.Option(None, "-m", hidden=True),
) -> None:
    from .. import dim as engine
    from ..errors import KxError
    from ..textio import display_name

    deprecated_flag(bool(vocab_short), "-n", "--vocab", "a count of items (as in head -n)")
    deprecated_flag(method_short is not None, "-m", "--method", "--metric")
    if method_short is not None:
        method = method_short
    vocab = [parse_count(v, "--vocab", 2) for v in [*(vocab or []), *(vocab_short or [])]]
    vectors = list(vectors or [])
    corpus = list(corpus or [])
    if method not in _CHOICES:
        raise typer.BadParameter(
            f"{method!r} is not one of {', '.join(_CHOICES)}", param_hint="--method"
        )
    if method == "pip":
        if len(corpus) != 1 or vocab or vectors:
            raise typer.BadParameter(
                "--method pip takes exactly one --corpus (and no --vocab/--vectors)",
                param_hint="--method",
            )
        progress, close = _progress_router()
        try:
            res = engine.pip_dimension(
                corpus[0],
                top=top,
                window=window,
                alpha=alpha,
                min_count=min_count,
                lang=lang,
                stopwords=stopwords,
                seed=seed,
                max_dim=max_dim,
                tmp_dir=tmp_dir,
                progress=progress,
            )
        finally:
            close()
        if as_json:
            print_json(res.as_dict())
            return
        edge = f"  (at --max-dim {res.dim}: the loss may fall further)" if res.at_max_dim else ""
        lines = [
            f"dim        {res.dim}{edge}",
            f"source     {res.source}: {res.tokens} tokens",
            f"vocab      {res.vocab} most frequent words, window {res.window}",
            f"sigma      {res.sigma:.6g} (noise per PMI entry, from two halves)",
            f"threshold  {res.threshold:.6g} (2 sigma sqrt(V)); {res.rank} singular values above",
            f"alpha      {res.alpha}",
        ]
        if res.pip_loss:
            lo = min(res.pip_loss)
            lines.append(f"pip loss   {lo:.6g} at k = {res.dim} (k = 1: {res.pip_loss[0]:.6g})")
        sys.stdout.write("\n".join(lines) + "\n")
        return

    if not (vocab or vectors or corpus):
        raise typer.BadParameter(
            "give at least one --vocab N, --vectors FILE or --corpus FILE", param_hint="--vocab"
        )
    if not (0.0 < eps < 1.0):
        raise typer.BadParameter("must be between 0 and 1 (exclusive)", param_hint="--eps")
    if min_count < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--min-count")

    sources: list[dict[str, Any]] = []
    for n in vocab:
        if n < 2:
            raise KxError(f"vocabulary size must be at least 2, not {n}")
        sources.append({"source": str(n), "vocab": n})
    for path in vectors:
        progress, close = _progress_router()
        try:
            n = engine.vectors_vocab_size(path, progress=progress)
        finally:
            close()
        sources.append({"source": display_name(path), "vocab": n, "from": "vectors"})
    if corpus:
        progress, close = _progress_router()
        try:
            for path in corpus:
                vc = engine.count_vocab(
                    path, min_count=min_count, lang=lang, stopwords=stopwords, progress=progress
                )
                if vc.vocab < 2:
                    raise KxError(
                        f"{vc.source!r} has {vc.vocab} distinct tokens seen at least "
                        f"{min_count} times: at least 2 are needed"
                    )
                sources.append({**vc.as_dict(), "from": "corpus"})
        finally:
            close()

    methods = list(_CLOSED) if method == "all" else [method]
    rows_json = []
    for src in sources:
        ests = [engine.estimate_dim(src["vocab"], m, eps=eps) for m in methods]
        rows_json.append({**src, "estimates": [e.as_dict() for e in ests]})

    if as_json:
        print_json({"method": method, "eps": eps, "results": rows_json})
        return

    show_source = bool(vectors or corpus)
    if len(methods) == 1 and len(rows_json) == 1:
        e = rows_json[0]["estimates"][0]
        where = f"{rows_json[0]['source']}: " if show_source else ""
        bound = f"{e['formula']} = {e['bound']:.2f}"
        sys.stdout.write(f"{e['dim']}  ({where}N = {e['vocab']}: {bound})\n")
        return
    if len(methods) == 1:
        headers = (["source"] if show_source else []) + ["vocab", "dim", "bound"]
        rows = []
        for r in rows_json:
            e = r["estimates"][0]
            rows.append(
                ([r["source"]] if show_source else [])
                + [str(r["vocab"]), str(e["dim"]), _fmt(e["bound"])]
            )
        _table(headers, rows, caption=f"{methods[0]}: {engine.METHODS[methods[0]]['formula']}")
        return
    headers = (["source"] if show_source else []) + [
        "vocab",
        "entropy",
        "entropy-analytic",
        f"jl(eps={eps:g})",
        "fourth-root",
    ]
    rows = []
    for r in rows_json:
        rows.append(
            ([r["source"]] if show_source else [])
            + [str(r["vocab"])]
            + [str(e["dim"]) for e in r["estimates"]]
        )
    _table(
        headers,
        rows,
        caption="entropy: n > 8.33 ln N; entropy-analytic: n > 8.3123 ln N; "
        "jl: k >= 4 ln N/(eps^2/2 - eps^3/3); fourth-root: N^(1/4)",
    )
