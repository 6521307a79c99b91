"""The training-data chores of ``kxtool shuffle``: ``-n``, ``-r``, ``--split``,
``--permutation``, ``-e``, ``-i`` and ``--random-source``. Checks the combinations (usage
errors, exit 2) and routes to the engines of :mod:`kxtool.shuffle`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from ._app import parse_count, usage_errors


@dataclass
class Chores:
    head_count: str | None = None
    repeat: bool = False
    split: list[str] | None = None
    permutation: str | None = None
    permutation_only: bool = False
    echo: bool = False
    input_range: str | None = None
    random_source: str | None = None

    def wanted(self) -> bool:
        return bool(
            self.head_count is not None
            or self.repeat
            or self.split
            or self.permutation
            or self.permutation_only
            or self.echo
            or self.input_range is not None
            or self.random_source is not None
        )


def _bad(message: str, hint: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=hint)


def run(
    chores: Chores,
    inputs: list[str],
    output: str,
    *,
    budget: int,
    seed: int | None,
    tmp_dir: str | None,
    shards: int | None,
    header: int,
    zero_terminated: bool,
    jobs: int | None,
    progress: Any,
) -> Any:
    """Check the options and run the chore; returns a :class:`ShuffleResult`."""
    from ..shuffle import ShuffleResult, shuffle_files
    from ..shuffle.permutation import count_records, write_permutation
    from ..shuffle.split import Parts

    count = None
    if chores.head_count is not None:
        count = parse_count(chores.head_count, "-n/--head-count")
    if chores.random_source is not None:
        if seed is not None:
            raise _bad("give --seed or --random-source, not both", "--random-source")
        from ..shuffle.ranges import seed_from_file

        seed = seed_from_file(chores.random_source)
    if seed is None:
        import secrets

        seed = secrets.randbits(63)
    generated = chores.echo or chores.input_range is not None
    if chores.echo and chores.input_range is not None:
        raise _bad("-e/--echo and -i/--input-range exclude each other", "-i/--input-range")
    if chores.input_range is not None and inputs:
        raise _bad(f"-i takes no FILE (got {inputs[0]!r})", "-i/--input-range")
    if chores.repeat and count is None and not generated:
        raise _bad(
            "-r with files needs -n N (the lines must be counted first; with -e or -i, -r "
            "alone draws forever)",
            "-r/--repeat",
        )
    parts = None
    if chores.split:
        if shards is not None:
            raise _bad("--split and --shards exclude each other", "--split")
        if output != "-":
            raise _bad("--split names its outputs itself: drop -o", "--split")
        if generated or chores.repeat:
            raise _bad("--split works on files, without -r", "--split")
        with usage_errors("--split"):
            parts = Parts(chores.split)
            parts.check()
    if chores.permutation_only and not chores.permutation:
        raise _bad("--permutation-only needs --permutation FILE.npy", "--permutation-only")
    if chores.permutation is not None:
        if chores.permutation == "-":
            raise _bad("needs a file name, not '-'", "--permutation")
        if chores.repeat:
            raise _bad("--permutation does not go with -r (draws repeat lines)", "--permutation")
        if chores.permutation_only and (output != "-" or parts is not None or shards):
            raise _bad("--permutation-only writes no data: drop -o, --split, --shards",
                       "--permutation-only")
    if generated and (header or shards):
        raise _bad("-e and -i take no --header or --shards", "--header" if header else "--shards")

    if generated:
        from ..shuffle.ranges import parse_input_range, shuffle_echo, shuffle_range

        if chores.input_range is not None:
            with usage_errors("-i/--input-range"):
                lo, hi = parse_input_range(chores.input_range)
            n = hi - lo + 1
            if chores.permutation:
                write_permutation(chores.permutation, seed, n, limit=count, memory=budget)
            lines = 0
            if not chores.permutation_only:
                lines = shuffle_range(lo, hi, output, seed=seed, count=count, repeat=chores.repeat,
                                      memory=budget, zero_terminated=zero_terminated)
        else:
            n = len(inputs)
            if chores.permutation:
                write_permutation(chores.permutation, seed, n, limit=count, memory=budget)
            lines = 0
            if not chores.permutation_only:
                lines = shuffle_echo(inputs, output, seed=seed, count=count,
                                     repeat=chores.repeat, zero_terminated=zero_terminated)
        return ShuffleResult(seed, lines, 0, 0, True, 0, 0, 1, [output])

    files = list(inputs) if inputs else ["-"]
    if chores.permutation_only:
        n = count_records(files, header=header, zero_terminated=zero_terminated)
        written = write_permutation(chores.permutation, seed, n, limit=count, memory=budget,
                                    progress=progress)
        return ShuffleResult(seed, written, 0, header, True, 0, 0, 1, [chores.permutation])
    target = parts if parts is not None else shards
    common = dict(memory=budget, seed=seed, shards=target, header=header,
                  zero_terminated=zero_terminated, progress=progress)
    out = parts.name(0) if parts is not None else output
    if chores.repeat:
        from ..shuffle.repeat import repeat_files

        assert count is not None
        return repeat_files(files, out, count, tmp_dir=tmp_dir, **common)
    if count is not None:
        from ..shuffle.sample import sample_files

        return sample_files(files, out, count, permutation=chores.permutation, jobs=jobs,
                            **common)
    result = shuffle_files(files, out, tmp_dir=tmp_dir, jobs=jobs, **common)
    if chores.permutation:
        write_permutation(chores.permutation, seed, result.records, memory=budget,
                          progress=progress)
        result.outputs.append(chores.permutation)
    return result
