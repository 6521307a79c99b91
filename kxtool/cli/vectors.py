"""`kxtool vectors info|convert|cache`: inspect word-vector files, convert them to the cache
format, and list or clean the cache."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from ._app import Bars, add_group, err, guard, print_json

vectors_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

add_group(
    vectors_app,
    "vectors",
    help=(
        "Inspect and convert word-vector files (word2vec text/binary, GloVe, fastText .vec,"
        " gzipped or not). Example: kxtool vectors info glove.6B.300d.txt"
    ),
)


def _positive(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--limit")
    return value


WORKERS = typer.Option(
    None,
    "--jobs",
    "-j",
    "--workers",
    metavar="N",
    min=1,
    help="Processes that parse a big text file [default: one per core, at most 8].",
    show_default=False,
)

LIMIT = typer.Option(
    None,
    "--limit",
    "-n",
    metavar="N",
    callback=_positive,
    help="Keep only the first N words (vector files list the most frequent words first).",
)


@vectors_app.command("info")
@guard
def info(
    file: str | None = typer.Argument(
        None,
        metavar="FILE",
        help="A vectors file in any supported format ('-' for stdin). Omit it for"
        " $KXTOOL_VECTORS, else the built-in default vectors.",
        show_default=False,
    ),
    default: bool = typer.Option(
        False, "--default", help="Describe the built-in default vectors (English GloVe 6B 50d)."
    ),
    limit: int | None = LIMIT,
    workers: int | None = WORKERS,
    sample: int = typer.Option(
        10, "--sample", metavar="K", min=0, help="How many sample words to show."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither read nor write the cache for FILE."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Describe a vectors file: size, dimension, norms, sample words.

    Prints the vocabulary size, the dimension, statistics of the vector norms and the first few
    words (vector files list the most frequent words first). The format is detected from the
    content. The first load of a text or binary file writes a cache (see `kxtool vectors
    convert`), so the next load takes well under a second.

    Examples:

        kxtool vectors info glove.6B.300d.txt

        kxtool vectors info cc.en.300.vec.gz --limit 200000 --json

        kxtool vectors info            # $KXTOOL_VECTORS, else the built-in GloVe 6B 50d set
    """
    from ..errors import KxError
    from ..vectors import ENV_VECTORS, default_vectors, load_vectors, vectors_info

    if file is not None and default:
        raise KxError("give either FILE or --default, not both")
    if file is None and not default:
        file = os.environ.get(ENV_VECTORS, "").strip() or None  # as every other command does
    if file is None:
        vec = default_vectors().head(limit)
    else:
        with Bars() as bars:
            vec = load_vectors(
                file, limit=limit, cache=not no_cache, progress=bars, workers=workers
            )
    report = vectors_info(vec, sample=sample)
    if as_json:
        print_json(report)
    else:
        _print_report(report)


@vectors_app.command("convert")
@guard
def convert(
    src: str = typer.Argument(..., metavar="IN", help="A vectors file in any supported format."),
    dst: str = typer.Argument(..., metavar="OUT", help="The output file (kxtool format, .kxv)."),
    limit: int | None = LIMIT,
    workers: int | None = WORKERS,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Convert a vectors file to kxtool's fast-loading format.

    The output holds a memory-mappable float32 matrix and its vocabulary in one file, which
    loads in milliseconds. It cannot be compressed (an OUT ending in .gz, .bz2, .xz or .zst is
    an error): it is memory-mapped when read.

    The input is streamed into the output, so files larger than memory convert. The output is
    written atomically (nothing is left behind on failure) and can be passed wherever a vectors
    file is taken, e.g. `kxtool wmd --vectors OUT`.

    Examples:

        kxtool vectors convert tencent-ailab-embedding-zh-d200.txt.gz zh.kxv

        kxtool vectors convert glove.840B.300d.txt glove-500k.kxv --limit 500000
    """
    import os

    from ..textio import format_size, is_remote, local_path
    from ..textio.remote import filesystem
    from ..vectors import convert_vectors

    with Bars() as bars:
        vec = convert_vectors(src, dst, limit=limit, progress=bars, workers=workers)
    if is_remote(local_path(dst)):
        fs, key = filesystem(dst)
        size = int(fs.size(key))
    else:
        size = os.path.getsize(local_path(dst))
    if as_json:
        print_json(
            {
                "input": src,
                "output": dst,
                "format": vec.format,
                "words": len(vec),
                "dim": vec.dim,
                "bytes": size,
            }
        )
    else:
        err(
            f"kxtool: wrote {len(vec)} words x {vec.dim} dimensions ({vec.format} input) to"
            f" {dst} ({format_size(size) if size >= 1024 else f'{size} bytes'})"
        )


@vectors_app.command("cache")
@guard
def cache(
    clean: bool = typer.Option(
        False, "--clean", help="Delete the cache files no load can use any more."
    ),
    everything: bool = typer.Option(
        False, "--all", help="With --clean: delete every cache file, current ones too."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file."),
) -> None:
    """List (or clean) the vector cache: one line per file, status, size and source.

    The first load of a vectors file writes a cache in $KXTOOL_CACHE_DIR (else
    $XDG_CACHE_HOME/kxtool, else ~/.cache/kxtool). A cache is `current` while its source file
    exists unchanged; `stale` when the source changed since, or when an older kxtool wrote it
    without checksums (the next load rebuilds it); `orphaned` when the source is gone;
    `damaged` when it is unreadable or fails its checksums (every cache is checked in full
    here; a load checks a sample and rebuilds a damaged cache). A temporary file is `writing`
    while the process writing it runs and `partial` once that process is gone (killed).
    `--clean` deletes all but the current ones and the writes in progress.

    Examples:

        kxtool vectors cache

        kxtool vectors cache --clean
    """
    from ..errors import KxError
    from ..textio import format_size
    from ..vectors import cache_dir, cache_entries, clean_cache

    if everything and not clean:
        raise KxError("--all needs --clean")
    entries = clean_cache(everything=everything) if clean else cache_entries()
    if as_json:
        for e in entries:
            print_json(
                {
                    "path": e.path,
                    "bytes": e.bytes,
                    "source": e.source,
                    "status": e.status,
                    "removed": clean,
                }
            )
    else:
        for e in entries:
            sys.stdout.write(f"{e.status}\t{e.bytes}\t{e.source or '-'}\t{e.path}\n")
        sys.stdout.flush()
    total = sum(e.bytes for e in entries)
    verb = "removed" if clean else "found"
    err(
        f"kxtool: {verb} {len(entries)} cache {'file' if len(entries) == 1 else 'files'}"
        f" ({format_size(total) if total >= 1024 else f'{total} bytes'}) in {cache_dir()}"
    )


def _rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    norms = report["norms"]

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    return [
        ("source", str(report["source"])),
        ("format", str(report["format"]) + (" (built-in default)" if report["is_default"] else "")),
        ("words", str(report["words"])),
        ("dimension", str(report["dim"])),
        ("cache", report["cache"] or "-"),
        (
            "norms",
            f"min {num(norms['min'])}  mean {num(norms['mean'])}  median {num(norms['median'])}"
            f"  max {num(norms['max'])}  std {num(norms['std'])}",
        ),
        ("zero vectors", str(report["zero_vectors"])),
        ("sample", " ".join(report["sample"])),
    ]


def _print_report(report: dict[str, Any]) -> None:
    rows = _rows(report)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for k, v in rows:
            table.add_row(Text(k), Text(v))
        Console().print(table)
        return
    width = max(len(k) for k, _ in rows)
    sys.stdout.write("".join(f"{k.ljust(width)}  {v}\n" for k, v in rows))
    sys.stdout.flush()
