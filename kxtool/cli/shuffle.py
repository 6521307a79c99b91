"""`kxtool shuffle`: the face of :func:`kxtool.shuffle.shuffle_files`."""

from __future__ import annotations

import time

import typer

from ._app import (
    CLUSTER_HELP,
    Bars,
    cluster_connection,
    cluster_option,
    command,
    deprecated_flag,
    err,
    parse_size_option,
    print_json,
    usage_errors,
)

HELP = """Shuffle the lines of one or more files uniformly, in bounded memory.

Every permutation is equally likely, whatever the input size: inputs larger than --memory are
shuffled through temporary files in --tmp-dir with two passes. The same --seed and input give
byte-identical output whatever --memory, so parallel files (source/target) with the same line
count are permuted alike. Inputs may be gzip, bzip2, xz or zstd compressed; '-' (or nothing)
is stdin. Inputs and outputs may be URLs (s3://, gs://, ...; globs expanded; needs
pip install 'kxtool[remote]').

Examples:

\b
  kxtool shuffle corpus.txt -o shuffled.txt --seed 7
  kxtool shuffle part-*.txt.gz --memory 4G --shards 16 -o 'out/part-{:05d}.txt'
  kxtool shuffle train.en --seed 1 -o train.en   # then the same for train.de:
  kxtool shuffle train.de --seed 1 -o train.de   # the two stay aligned
  zcat big.txt.gz | kxtool shuffle --header 1 | head
  kxtool shuffle 's3://bkt/crawl/part-*.zst' --shards 64 -o 's3://bkt/shuf/{:05d}.zst'
  kxtool shuffle part-*.txt --cluster local:2 -T /shared/tmp -o /shared/out.txt
"""


@command("shuffle", help=HELP, no_args_is_help=False)
def shuffle(
    inputs: list[str] = typer.Argument(
        None,
        help="Input files ('-' or none: stdin) or URLs (s3://bucket/part-*.zst: globs "
        "expanded); .gz/.bz2/.xz/.zst are read transparently.",
        show_default=False,
        metavar="FILE",
    ),
    output: str = typer.Option(
        "-",
        "-o",
        "--output",
        metavar="FILE",
        help="Output file ('-': stdout); may be one of the inputs. A regular file is replaced "
        "atomically when all is written (a symlink is followed; a file with several hard links "
        "is rewritten in place, so that every link sees the result, as GNU shuf -o does); a "
        "device or FIFO is written through; a URL is uploaded when all is written. With "
        "--shards, a pattern such as 'out/part-{:05d}.txt' (missing directories are created).",
    ),
    memory: str = typer.Option(
        "1G",
        "--memory",
        "-S",
        metavar="SIZE",
        help="Memory budget for records, e.g. 512M, 4G (as sort -S; at least 4K).",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        "-s",
        metavar="N",
        help="Seed; the same seed and input give the same output.",
        min=0,
        max=2**64 - 1,
    ),
    tmp_dir: str | None = typer.Option(
        None,
        "--tmp-dir",
        "-T",
        metavar="DIR",
        help="Directory for temporary files, and for URL outputs before their upload "
        "(default: $TMPDIR).",
    ),
    shards: int | None = typer.Option(
        None, "--shards", min=1, metavar="N", help="Write N output files of near-equal line counts."
    ),
    header: int = typer.Option(
        0,
        "--header",
        min=0,
        metavar="N",
        help="Keep the first N lines of the first input on top (of every shard), unshuffled.",
    ),
    zero_terminated: bool = typer.Option(
        False, "-z", "--zero-terminated", help="Records end with NUL, not newline."
    ),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        "-j",
        min=1,
        metavar="N",
        help="Worker processes for inputs that do not fit in memory, threads for those that do "
        "(default: the cores, at most 4). The output does not depend on it.",
    ),
    cluster: str | None = cluster_option(
        CLUSTER_HELP + " The inputs, the output and --tmp-dir must be on storage every worker"
        " sees; --memory is each worker's budget; the output is the same byte for byte."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print a JSON summary on stdout (needs -o)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Report the seed, sizes and passes on stderr."
    ),
    memory_short: str = typer.Option(None, "-m", hidden=True),
) -> None:
    from ..shuffle import shuffle_files

    deprecated_flag(memory_short is not None, "-m", "--memory (-S)", "--metric")
    if memory_short is not None:
        memory = memory_short

    from ..shuffle import MIN_MEMORY, check_shard_pattern

    budget = parse_size_option(memory, "--memory", MIN_MEMORY)
    if json_out and output == "-":
        raise typer.BadParameter(
            "--json prints a summary on stdout, so it needs -o FILE", param_hint="--json"
        )
    if shards is not None:
        with usage_errors("--shards"):
            check_shard_pattern(output, shards)
    started = time.perf_counter()
    with Bars() as bars, cluster_connection(cluster) as connection:
        result = shuffle_files(
            list(inputs) if inputs else ["-"],
            output,
            memory=budget,
            seed=seed,
            tmp_dir=tmp_dir,
            shards=shards,
            header=header,
            zero_terminated=zero_terminated,
            jobs=jobs,
            progress=bars,
            cluster=connection,
        )
    elapsed = time.perf_counter() - started
    summary = {
        "seed": result.seed,
        "records": result.records,
        "bytes": result.bytes,
        "header": result.header,
        "in_memory": result.in_memory,
        "runs": result.runs,
        "piles": result.piles,
        "jobs": result.jobs,
        "outputs": result.outputs,
        "seconds": round(elapsed, 3),
    }
    if verbose:
        from ..tempfiles import take_removed

        for path in take_removed():
            err(f"kxtool: removed {path!r}, left by a run that was killed")
        how = (
            f"in memory, {result.jobs} {'thread' if result.jobs == 1 else 'threads'}"
            if result.in_memory
            else f"{result.runs} runs, {result.piles} piles, {result.jobs} workers"
        )
        err(f"kxtool: seed {result.seed}")
        err(f"kxtool: {result.records} records, {result.bytes} bytes, {how}, {elapsed:.2f} s")
    if json_out:
        print_json(summary)
