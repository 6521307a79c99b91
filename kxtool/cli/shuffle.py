"""`kxtool shuffle`: the face of :func:`kxtool.shuffle.shuffle_files`."""

from __future__ import annotations

import os
import sys
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

Training-data chores (the order is always that of the full shuffle with the same seed):

\b
  kxtool shuffle -n 1000000 corpus.txt --seed 7 > sample.txt   # = the full shuffle | head
  kxtool shuffle -r -n 10 words.txt                # 10 draws with replacement
  kxtool shuffle data.jsonl --seed 7 --split train.jsonl=0.98 --split valid.jsonl=5000 \\
      --split test.jsonl=rest
  kxtool shuffle text.txt --seed 7 -o text.shuf --permutation perm.npy   # then
  python -c 'import numpy as np; p = np.load("perm.npy", mmap_mode="r")'  # tokens[p]
  kxtool shuffle -e red green blue                 # the arguments are the lines
  kxtool shuffle -i 1-100 -n 5                     # integers, any range, bounded memory
  kxtool shuffle --random-source seedfile corpus.txt   # the seed from a file's bytes
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
    head_count: str | None = typer.Option(
        None,
        "-n",
        "--head-count",
        metavar="N",
        help="Write only N lines: an exact uniform sample without replacement, the first N "
        "lines of the full shuffle with the same seed (as shuf -n), in one pass, memory bounded "
        "by the sample (a sample over 30% of --memory is an error, unless N covers every line "
        "of input files). N over the line count gives the whole shuffle. --header lines come "
        "on top and are not counted.",
    ),
    repeat: bool = typer.Option(
        False,
        "-r",
        "--repeat",
        help="With -n N, N draws with replacement (as shuf -r). Files are read twice (counted "
        "first); stdin is spooled to --tmp-dir. With -e or -i and no -n, draws forever.",
    ),
    split: list[str] = typer.Option(
        None,
        "--split",
        metavar="NAME=SIZE",
        help="Write the shuffle into named parts, in the order given (repeat the option); SIZE "
        "is a count (5000), a fraction (0.98: floor of the running sum of fractions times the "
        "line count, so fractions adding to 1 take every line), a percentage (2%) or 'rest'. "
        "The parts concatenated are the full shuffle; all appear or none.",
    ),
    permutation: str | None = typer.Option(
        None,
        "--permutation",
        metavar="FILE.npy",
        help="Also write, for each output line, the 0-based index of its input line (header "
        "lines not counted) as a uint64 .npy array (np.load(..., mmap_mode='r')); bounded "
        "memory for any line count.",
    ),
    permutation_only: bool = typer.Option(
        False,
        "--permutation-only",
        help="Write only the --permutation file: the input is only counted, no data is written.",
    ),
    echo: bool = typer.Option(
        False, "-e", "--echo", help="The FILE arguments are the lines themselves (as shuf -e)."
    ),
    input_range: str | None = typer.Option(
        None,
        "-i",
        "--input-range",
        metavar="LO-HI",
        help="Shuffle the integers LO..HI, one a line (as shuf -i): the order of "
        "'seq LO HI | kxtool shuffle'; any size in bounded memory.",
    ),
    random_source: str | None = typer.Option(
        None,
        "--random-source",
        metavar="FILE",
        help="Take the seed from FILE: the first 8 bytes of the BLAKE2b digest of its first "
        "MiB (any file, pipe or device). The order differs from GNU shuf's with the same file.",
    ),
    memory_short: str = typer.Option(None, "-m", hidden=True),
) -> None:
    if "numpy" not in sys.modules:
        # the shuffle calls no BLAS: its idle threads would only spin for a tenth of a second
        # after numpy loads, on the cores the shuffle's own threads need (OpenBLAS)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
    from ._shuffle_chores import Chores, run

    chores = Chores(head_count, repeat, split, permutation, permutation_only, echo,
                    input_range, random_source)
    started = time.perf_counter()
    if chores.wanted() and cluster:
        raise typer.BadParameter(
            "-n, -r, -e, -i, --split and --permutation run on one machine", param_hint="--cluster"
        )
    with Bars() as bars, cluster_connection(cluster) as connection:
        if chores.wanted():
            result = run(chores, list(inputs or []), output, budget=budget, seed=seed,
                         tmp_dir=tmp_dir, shards=shards, header=header,
                         zero_terminated=zero_terminated, jobs=jobs, progress=bars)
        else:
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
