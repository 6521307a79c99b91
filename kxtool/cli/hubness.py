"""`kxtool hubness FILE` (the report) and `kxtool hubness sample` (hubness-prior latents).

`hubness` is a group whose first argument is routed: `sample` (or `report`) names a
subcommand, anything else is the FILE of the default report, so `kxtool hubness vecs.txt -k 5`
works as the issue asks.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ._app import (
    CLUSTER_HELP,
    Bars,
    add_group,
    choices,
    cluster_connection,
    cluster_option,
    guard,
    parse_size_option,
    print_json,
)


class _DefaultGroup(TyperGroup):
    """A group that runs ``report`` when the first argument is not a subcommand name."""

    default_command = "report"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, "FILE [OPTIONS]  |  sample [OPTIONS]")

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The group's options and commands, then the report's own arguments and options, so
        that ``kxtool hubness --help`` shows how to run a report."""
        super().format_options(ctx, formatter)
        from typer import _click

        report = self.get_command(ctx, self.default_command)
        if report is None:  # pragma: no cover
            return
        sub = _click.Context(report, info_name=self.default_command, parent=ctx)
        rows = [r for p in report.get_params(sub) if (r := p.get_help_record(sub)) is not None]
        with formatter.section(f"Options of the report ({ctx.command_path} FILE [OPTIONS])"):
            formatter.write_dl(rows)


_GROUP_HELP = """Hubness of a set of vectors: the points that are nearest neighbours of very many
others (hubs), those of none (antihubs), and hubness reduction; `sample` draws GAN latents with a
hubness prior.

`kxtool hubness FILE [OPTIONS]` runs the report (its options are listed below);
`kxtool hubness sample [OPTIONS]` writes latents (see `kxtool hubness sample --help`).

Examples:

\b
  kxtool hubness glove.6B.300d.txt --limit 50000 -k 10
  kxtool hubness embeddings.npy --metric euclidean --reduce mp --json
  kxtool hubness embeddings.npy -k 10 --cluster local:2
  kxtool hubness sample --dim 512 --count 1000 -k 5 --min-occurrence 50 -o z.npy
"""

hubness_app = typer.Typer(
    cls=_DefaultGroup,
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
add_group(hubness_app, "hubness", help=_GROUP_HELP)

_REPORT_HELP = """Hubness report of FILE: k-occurrence measures, top hubs, antihubs, a histogram.

FILE is a vectors file (word2vec text/binary, GloVe, fastText, gzipped, kxtool cache), a `.npy`
matrix, or `-` for whitespace-separated numbers on stdin (one row a line). The k nearest
neighbours are exact (blocked float32 BLAS; a point is never its own neighbour); `--approx` uses
faiss HNSW instead, and every figure is then marked approximate (~).

Measures (scikit-hubness's definitions, over the k-occurrence N_k, which sums to k*n):
k-skewness, Robin Hood, Gini and Atkinson (eps 0.5) indices, hub occurrence (share of k-NN slots
held by hubs, N_k >= hub-size*k), antihub occurrence (share of points with N_k = 0), groupie
ratio (max N_k / kn), and the Spearman correlation of N_k with the distance to the data mean
(negative: hubs sit near the mean).

--reduce re-ranks --candidates neighbours per point with a secondary distance and reports the
measures before and after: mp (mutual proximity, empiric), mp-gauss (Gaussian), ls (local
scaling), nicdm, dsl (DisSim local), csls (cross-domain similarity local scaling).
--scale-k is the neighbourhood of the local statistics (ls, nicdm, dsl: 5; csls: 10).

Examples:

\b
  kxtool hubness glove.6B.300d.txt --limit 50000
  kxtool hubness embeddings.npy -k 5 --metric euclidean --reduce mp --neighbors nn.tsv
  kxtool hubness vecs.txt --sample 20000 --seed 1 --reduce csls --json
  python -c 'import numpy as np; np.savetxt("/dev/stdout", np.random.randn(500, 64))' \\
      | kxtool hubness - -k 10
"""


def _int_option(value: int | None, name: str, lo: int = 1) -> int | None:
    if value is not None and value < lo:
        raise typer.BadParameter(f"must be at least {lo}", param_hint=name)
    return value


def _progress_router() -> tuple[Any, Any]:
    """Byte phases (reading a vectors file) in bytes, the others in steps."""
    bars = Bars(unit=lambda phase: "B" if phase.startswith("reading") else "it")
    return bars, bars.close


_MEASURE_ROWS = (
    ("k_skewness", "k-skewness"),
    ("robin_hood", "Robin Hood index"),
    ("gini", "Gini index"),
    ("atkinson", "Atkinson index (eps 0.5)"),
    ("hub_occurrence", "hub occurrence"),
    ("hubs", "hubs"),
    ("antihub_occurrence", "antihub occurrence"),
    ("antihubs", "antihubs"),
    ("groupie_ratio", "groupie ratio"),
    ("max_occurrence", "largest N_k"),
    ("spearman_occurrence_vs_distance_to_mean", "Spearman(N_k, distance to mean)"),
)


def _fmt(v: Any, approx: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{v:,}" if isinstance(v, int) else f"{v:.4f}"
    return ("~" + s) if approx else s


class _Out:
    """Writes the report to a stream, as Rich tables on a terminal or plain text otherwise."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.rich = stream.isatty()
        self._console = None
        if self.rich:
            from rich.console import Console

            self._console = Console(file=stream, highlight=False)

    def line(self, text: str = "") -> None:
        if self._console is not None:
            self._console.print(text, markup=False)
        else:
            self.stream.write(text + "\n")

    def table(
        self, title: str, headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()
    ) -> None:
        if self._console is not None:
            from rich.table import Table

            t = Table(*headers, title=title, title_justify="left")
            for i in right:
                t.columns[i].justify = "right"
            for r in rows:
                t.add_row(*r)
            self._console.print(t)
            return
        self.line(title)
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]

        def fmt(cells: list[str]) -> str:
            out = []
            for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
                out.append(c.rjust(w) if i in right else c.ljust(w))
            return ("  " + "  ".join(out)).rstrip()

        self.line(fmt(headers))
        for r in rows:
            self.line(fmt(r))


def _histogram(out: _Out, title: str, hist: list[dict[str, int]], width: int = 50) -> None:
    top = max((math.log10(h["count"] + 1) for h in hist), default=1.0) or 1.0
    mark = "\u2588" if out.rich else "#"
    rows = []
    for h in hist:
        lab = str(h["low"]) if h["low"] == h["high"] else f"{h['low']}-{h['high']}"
        n = h["count"]
        bar = mark * (int(round(width * math.log10(n + 1) / top)) if n else 0)
        if n and not bar:
            bar = mark
        rows.append([lab, f"{n:,}", bar])
    out.table(title, ["N_k", "points", "log10 scale"], rows, right=(0, 1))


def _label(item: dict[str, Any]) -> str:
    return item["word"] if item["word"] is not None else f"row {item['row']}"


def _render(rep: dict[str, Any], stream: Any) -> None:
    out = _Out(stream)
    approx = bool(rep["approximate"])
    kind = "APPROXIMATE (faiss HNSW), figures marked ~" if approx else "exact k-NN"
    out.line(
        f"hubness of {rep['source']}: n={rep['n']:,} dim={rep['dim']} k={rep['k']}"
        f" metric={rep['metric']} ({kind})"
    )
    red = rep.get("reduction")
    has_words = any(h["word"] is not None for h in rep["top_hubs"])
    headers = ["measure", "value"]
    if red is not None:
        headers = ["measure", "before", f"after {red['method']}"]
    rows = []
    hub_min = rep["hub_size"] * rep["k"]
    hub_min_s = f"{hub_min:g}"
    for key, label in _MEASURE_ROWS:
        if key == "hub_occurrence":
            label = f"hub occurrence (N_k >= {hub_min_s})"
        elif key == "antihub_occurrence":
            label = "antihub occurrence (N_k = 0)"
        row = [label, _fmt(rep["measures"].get(key), approx)]
        if red is not None:
            row.append(_fmt(red["measures"].get(key), approx))
        rows.append(row)
    out.line()
    out.table("measures", headers, rows, right=tuple(range(1, len(headers))))
    if red is not None:
        extra = f", --scale-k {red['scale_k']}" if red.get("scale_k") else ""
        out.line(f"  (reduction over {red['candidates']} candidates per point{extra})")

    def hubs_block(title: str, part: dict[str, Any]) -> None:
        out.line()
        out.table(
            title,
            ["rank", "N_k", "word" if has_words else "point"],
            [
                [str(i + 1), _fmt(h["k_occurrence"], approx), _label(h)]
                for i, h in enumerate(part["top_hubs"])
            ],
            right=(0, 1),
        )
        anti = part["measures"]["antihubs"]
        share = part["measures"]["antihub_occurrence"]
        ex = ", ".join(_label(a) for a in part["antihub_examples"])
        out.line()
        out.line(
            f"antihubs (N_k = 0): {_fmt(anti, approx)} of {rep['n']:,}"
            f" ({share * 100:.1f}%)" + (f"; first: {ex}" if ex else "")
        )

    hubs_block("top hubs", rep)
    if red is not None:
        hubs_block(f"top hubs after {red['method']}", red)
    out.line()
    _histogram(
        out, "k-occurrence histogram" + (" (approximate)" if approx else ""), rep["histogram"]
    )
    if red is not None:
        out.line()
        _histogram(out, f"k-occurrence histogram after {red['method']}", red["histogram"])
    stream.flush()


def _save_neighbors(path: str, report: Any, has_words: bool) -> None:
    import numpy as np

    from ..textio import atomic_output

    ind = report.reduced_indices if report.reduced_indices is not None else report.indices
    rows = report.rows
    with atomic_output(path) as f:
        if path.lower().endswith(".npy"):
            np.save(f, rows[ind])
            return
        names = report.labels if has_words else [str(r) for r in rows]
        buf = []
        for i in range(len(ind)):
            buf.append(names[i] + "\t" + "\t".join(names[j] for j in ind[i]) + "\n")
            if len(buf) >= 4096:
                f.write("".join(buf).encode("utf-8"))
                buf.clear()
        f.write("".join(buf).encode("utf-8"))


@hubness_app.command("report", help=_REPORT_HELP)
@guard
def report_command(
    file: str = typer.Argument(
        ..., metavar="FILE", help="Vectors file, .npy matrix, or '-' (numbers on stdin)."
    ),
    k: int = typer.Option(10, "-k", "--k", metavar="K", help="Neighbours per point."),
    metric: str = typer.Option(
        "cosine",
        "--metric",
        "-m",
        metavar="METRIC",
        autocompletion=choices("cosine", "euclidean"),
        help="cosine or euclidean.",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        "-n",
        metavar="N",
        help="Use the first N rows (vector files: most frequent).",
    ),
    sample: int | None = typer.Option(
        None, "--sample", metavar="N", help="Use N rows drawn at random (after --limit)."
    ),
    seed: int = typer.Option(0, "--seed", "-s", metavar="S", help="Seed of --sample."),
    hub_size: float = typer.Option(
        2.0, "--hub-size", metavar="H", help="Hubs are points with N_k >= H*k."
    ),
    reduce: str | None = typer.Option(
        None,
        "--reduce",
        metavar="METHOD",
        autocompletion=choices("mp", "mp-gauss", "ls", "nicdm", "dsl", "csls"),
        help="mp, mp-gauss, ls, nicdm, dsl or csls.",
    ),
    candidates: int | None = typer.Option(
        None,
        "--candidates",
        metavar="C",
        help="Candidates per point for --reduce [default: max(100, 3k), at most n-1].",
    ),
    scale_k: int | None = typer.Option(
        None, "--scale-k", metavar="S", help="Neighbourhood of ls/nicdm/dsl (5) and csls (10)."
    ),
    neighbors: str | None = typer.Option(
        None,
        "--neighbors",
        metavar="FILE",
        help="Write the (reduced) neighbour lists: TSV (word, then k neighbours), or int64"
        " row ids if FILE ends in .npy; '-' is stdout (the report then goes to stderr).",
    ),
    top: int = typer.Option(10, "--top", metavar="N", help="How many hubs and antihubs to show."),
    memory: str = typer.Option(
        "1G",
        "--memory",
        "-S",
        metavar="SIZE",
        help="Working memory of one block of k-NN scores.",
    ),
    approx: bool = typer.Option(
        False, "--approx", help="Approximate k-NN with faiss HNSW (extra kxtool[approx])."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    cluster: str | None = cluster_option(
        CLUSTER_HELP + " The exact k-NN runs there in blocks of queries; the measures here."
    ),
) -> None:
    if metric not in ("cosine", "euclidean"):
        raise typer.BadParameter("use cosine or euclidean", param_hint="--metric")
    from ..hubness import REDUCTIONS

    if reduce is not None and reduce not in REDUCTIONS:
        raise typer.BadParameter(f"use one of {', '.join(REDUCTIONS)}", param_hint="--reduce")
    _int_option(k, "-k")
    _int_option(limit, "--limit")
    _int_option(sample, "--sample")
    _int_option(candidates, "--candidates")
    _int_option(scale_k, "--scale-k")
    _int_option(top, "--top", 0)
    mem = parse_size_option(memory, "--memory")
    if neighbors is not None:
        from ..textio import check_output

        check_output(neighbors)  # before the work, not after it

    from ..hubness import read_matrix

    if cluster and approx:
        raise typer.BadParameter("--approx runs here; leave out --cluster", param_hint="--cluster")
    progress, close = _progress_router()
    try:
        x, words, rows = read_matrix(file, limit=limit, sample=sample, seed=seed, progress=progress)
        with cluster_connection(cluster) as connection:
            rep = _report_on(x, words, rows, file, k, metric, hub_size, reduce, candidates,
                             scale_k, mem, approx, top, progress, connection)
    finally:
        close()
    _show_report(rep, words, neighbors, json_out)


def _report_on(x, words, rows, file, k, metric, hub_size, reduce, candidates,  # type: ignore[no-untyped-def]
               scale_k, mem, approx, top, progress, connection):
    from ..hubness import hubness_report
    from ..textio import display_name

    return hubness_report(
        x,
        words=words,
        rows=rows,
        source=display_name(file),
        k=k,
        metric=metric,
        hub_size=hub_size,
        reduce=reduce,
        candidates=candidates,
        scale_k=scale_k,
        memory=mem,
        approx=approx,
        top=top,
        progress=progress,
        cluster=connection,
    )


def _show_report(rep, words, neighbors, json_out) -> None:  # type: ignore[no-untyped-def]
    data = rep.to_dict()
    if neighbors is not None:
        _save_neighbors(neighbors, rep, words is not None)
    if json_out:
        if neighbors == "-":
            sys.stderr.write(__import__("json").dumps(data, ensure_ascii=False) + "\n")
        else:
            print_json(data)
        return
    _render(data, sys.stderr if neighbors == "-" else sys.stdout)


_SAMPLE_HELP = """Draw GAN latents with a hubness prior and write them as a .npy matrix.

Standard-normal latents of --dim dimensions are drawn in batches of --batch-size; within each
batch every latent gets its k-occurrence (exact k-NN, --metric), and those with N_k >=
--min-occurrence are kept, in draw order, until exactly --count rows are written (Liang et al.,
"Exploring and Exploiting Hubness Priors for High-Quality GAN Latent Sampling", ICML 2022).
Deterministic for a --seed. A threshold no latent reaches is an error, not an endless loop.

Examples:

\b
  kxtool hubness sample --dim 512 --count 1000 -k 5 --min-occurrence 50
  kxtool hubness sample --dim 512 --count 1000 -k 5 --min-occurrence 50 -o z.npy
  kxtool hubness sample --dim 128 --count 200 --min-occurrence 20 --seed 7 -o - > z.npy
"""


@hubness_app.command("sample", help=_SAMPLE_HELP)
@guard
def sample_command(
    dim: int = typer.Option(..., "--dim", metavar="D", help="Latent dimension."),
    count: int = typer.Option(..., "--count", metavar="N", help="Rows to write."),
    k: int = typer.Option(5, "-k", "--k", metavar="K", help="Neighbours per latent."),
    min_occurrence: int = typer.Option(
        ..., "--min-occurrence", metavar="T", help="Keep latents with k-occurrence >= T."
    ),
    output: str = typer.Option(
        "latents.npy",
        "--output",
        "-o",
        metavar="FILE",
        help="The .npy file to write ('-': stdout).",
    ),
    seed: int = typer.Option(0, "--seed", "-s", metavar="S", help="Random seed."),
    batch_size: int = typer.Option(
        10_000,
        "--batch-size",
        metavar="B",
        help="Latents per batch (the k-occurrence is within one).",
    ),
    metric: str = typer.Option(
        "euclidean",
        "--metric",
        "-m",
        metavar="METRIC",
        autocompletion=choices("euclidean", "cosine"),
        help="euclidean or cosine.",
    ),
    max_batches: int = typer.Option(
        1000, "--max-batches", metavar="M", help="Give up (with an error) after M batches."
    ),
    memory: str = typer.Option(
        "1G",
        "--memory",
        "-S",
        metavar="SIZE",
        help="Working memory of one block of k-NN scores.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    if metric not in ("cosine", "euclidean"):
        raise typer.BadParameter("use cosine or euclidean", param_hint="--metric")
    mem = parse_size_option(memory, "--memory")
    if (
        output != "-"
        and not output.lower().endswith(".npy")
        and (os.path.isfile(output) or not os.path.exists(output))  # a device needs no name
    ):
        raise typer.BadParameter(
            "the output is a .npy file: name it FILE.npy", param_hint="--output"
        )
    if output == "-" and json_out:
        raise typer.BadParameter("--json and '-o -' both use stdout", param_hint="--json")
    from ..textio import check_output

    check_output(output)
    import numpy as np

    from ..hubness import hubness_prior_sample
    from ..textio import atomic_output

    info: dict[str, Any] = {}
    with Bars(unit="it") as bars:
        z = hubness_prior_sample(
            dim,
            count,
            k=k,
            min_occurrence=min_occurrence,
            batch_size=batch_size,
            seed=seed,
            metric=metric,
            max_batches=max_batches,
            memory=mem,
            progress=bars,
            info=info,
        )
    with atomic_output(output) as f:
        np.save(f, z)
    summary = {
        "output": output,
        "rows": int(z.shape[0]),
        "dim": int(z.shape[1]),
        "k": k,
        "min_occurrence": min_occurrence,
        "batch_size": batch_size,
        "seed": seed,
        "metric": metric,
        "batches": info.get("batches"),
        "drawn": info.get("drawn"),
        "acceptance_rate": info["accepted"] / info["drawn"] if info.get("drawn") else None,
    }
    if json_out:
        print_json(summary)
    elif output != "-":
        rate = summary["acceptance_rate"]
        sys.stderr.write(
            f"kxtool: wrote {z.shape[0]} latents of dimension {dim} to {output}"
            f" ({info.get('batches')} batches of {batch_size};"
            f" {rate * 100:.2f}% of drawn latents met the threshold)\n"
        )
