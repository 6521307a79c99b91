"""The command-line face: CliRunner for options and output, a real subprocess for pipes, exit
codes and signals; the generated reference and completions are current."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from kxtool import __version__
from kxtool.cli import app
from kxtool.cli._reference import expected_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = CliRunner()


def kx(*args: str, input: bytes | None = None, env_extra: dict | None = None, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "kxtool", *args],
        input=input,
        capture_output=True,
        env=env,
        cwd=cwd,
    )


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kxtool {__version__}"


def test_python_dash_m_works():
    proc = kx("--version")
    assert proc.returncode == 0 and proc.stdout.decode().strip() == f"kxtool {__version__}"


def test_every_command_has_help_with_an_example():
    import typer
    from typer import _click

    root = typer.main.get_command(app)
    ctx = _click.Context(root, info_name="kxtool")
    names = root.list_commands(ctx)
    assert "shuffle" in names
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "xample" in result.output, name


def test_shuffle_through_clirunner(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(100)))
    out = tmp_path / "out.txt"
    result = runner.invoke(app, ["shuffle", str(src), "-o", str(out), "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["seed"] == 3 and summary["records"] == 100 and summary["in_memory"]
    assert sorted(out.read_bytes().split()) == sorted(src.read_bytes().split())


def test_shuffle_stdout_and_verbose_seed(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\nb\nc\n")
    proc = kx("shuffle", str(src), "--verbose")
    assert proc.returncode == 0
    assert sorted(proc.stdout.split()) == [b"a", b"b", b"c"]
    assert b"seed" in proc.stderr
    seed = int(proc.stderr.split(b"seed ")[1].split()[0])
    again = kx("shuffle", str(src), "--seed", str(seed))
    assert again.stdout == proc.stdout


def test_errors_are_one_line_on_stderr_with_exit_1(tmp_path):
    proc = kx("shuffle", str(tmp_path / "missing.txt"))
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kxtool: error:") and "missing.txt" in lines[0]
    assert proc.stdout == b""


def test_usage_errors_exit_2(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\n")
    for args in (["shuffle", str(src), "--memory", "lots"], ["shuffle", "--no-such-option"]):
        proc = kx(*args)
        assert proc.returncode == 2, args
        assert b"Traceback" not in proc.stderr


def test_json_needs_an_output_file(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\n")
    proc = kx("shuffle", str(src), "--json")
    assert proc.returncode == 2 and b"-o" in proc.stderr  # a usage error


@pytest.mark.parametrize(
    "args",
    [
        "shuffle {src} --seed 1",  # in memory
        "shuffle {src} --seed 1 --memory 8M",  # two passes, workers
        "shuffle {src} --seed 1 --memory 8M -j 1",
        "shuffle --header 1 --seed 1 < {src}",
        "shuffle --seed 1 --memory 8M - < {src}",
        "hubness {vec} -k 2 --neighbors -",
    ],
)
def test_pipe_into_head_ends_quietly(tmp_path, args):
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"line number %d of the file\n" % i for i in range(1_000_000)))
    vec = tmp_path / "vec.txt"
    rng = np.random.default_rng(0)
    vec.write_text("".join(f"w{i} {' '.join(map(str, rng.normal(size=4)))}\n" for i in range(3000)))
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = f"{sys.executable} -m kxtool {args.format(src=src, vec=vec)} | head -n 1"
    for _ in range(3):
        proc = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, env=env
        )
        assert len(proc.stdout.splitlines()) == 1
        if args.startswith("hubness"):  # the report goes to stderr when the data is on stdout
            assert b"error" not in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr
        else:
            assert proc.stderr == b"", proc.stderr
        assert proc.returncode in (0, 141)


def test_stdin_dash_and_none_are_the_same(tmp_path):
    data = b"".join(b"%d\n" % i for i in range(1000))
    a = kx("shuffle", "--seed", "5", input=data)
    b = kx("shuffle", "-", "--seed", "5", input=data)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert sorted(a.stdout.split()) == sorted(data.split())


def test_sharded_output_through_the_cli(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"h\n" + b"".join(b"%d\n" % i for i in range(10)))
    (tmp_path / "out").mkdir()
    pattern = str(tmp_path / "out" / "part-{:02d}.txt")
    proc = kx("shuffle", str(src), "--shards", "3", "-o", pattern, "--header", "1", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    parts = sorted(os.listdir(tmp_path / "out"))
    assert parts == ["part-00.txt", "part-01.txt", "part-02.txt"]
    for p in parts:
        assert (tmp_path / "out" / p).read_bytes().startswith(b"h\n")


def test_completion_answers_from_the_app():
    proc = kx(
        env_extra={
            "_KXTOOL_COMPLETE": "complete_bash",
            "COMP_WORDS": "kxtool shuf",
            "COMP_CWORD": "1",
        }
    )
    assert proc.stdout.decode().split() == ["shuffle"]


def test_generated_reference_and_completions_are_current():
    stale = []
    for path, text in expected_files(ROOT).items():
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            stale.append(os.path.relpath(path, ROOT))
    assert not stale, (
        f"stale generated files {stale}: run `python -m kxtool.cli._reference` and commit them"
    )


def _ruff() -> str | None:
    """ruff beside this interpreter (a venv's bin/, not on PATH under the README's command),
    else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ruff")
    return beside if os.access(beside, os.X_OK) else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff not installed")
def test_ruff_is_clean():
    proc = subprocess.run(
        [_ruff(), "check", "--quiet", "kxtool", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _on_a_terminal(args: list[str]) -> bytes:
    """What ``kxtool ARGS`` shows on a terminal's stderr (stdout discarded)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kxtool", *args],
        stderr=slave,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    seen = b""
    while True:  # read while it runs, so that a full terminal buffer never blocks it
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, seen
    return seen


def test_progress_bars_only_on_a_terminal(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(400000)))
    args = ["shuffle", str(src), "-o", str(tmp_path / "o"), "--memory", "4M", "--jobs", "1"]
    seen = _on_a_terminal(args)
    assert b"reading" in seen and b"writing" in seen
    piped = kx(*args)
    assert piped.returncode == 0 and piped.stderr == b""


@pytest.mark.parametrize("compressed", [False, True])
def test_the_paired_wmd_bar_has_a_total_and_a_percentage(tmp_path, compressed):
    import gzip

    text = b"".join(b"the cat sat on the mat number %d\n" % i for i in range(6000))
    a = tmp_path / ("a.txt.gz" if compressed else "a.txt")
    a.write_bytes(gzip.compress(text) if compressed else text)
    b = tmp_path / "b.txt"
    b.write_bytes(text)
    seen = _on_a_terminal(["wmd", str(a), str(b), "--metric", "wcd"])
    assert b"reading A" in seen and b"%" in seen, seen[-500:]


def _walk(cmd, ctx, path):
    from typer import _click

    ctx = _click.Context(cmd, info_name=path[-1], parent=ctx)
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                yield from _walk(sub, ctx, [*path, name])


def test_one_short_flag_means_one_thing_in_every_command():
    import typer

    from kxtool.cli._app import SHORT_FLAGS

    wrong = []
    for path, cmd, ctx in _walk(typer.main.get_command(app), None, ["kxtool"]):
        for param in cmd.get_params(ctx):
            if getattr(param, "hidden", False) or getattr(param, "param_type_name", "") != "option":
                continue
            names = [*param.opts, *param.secondary_opts]
            shorts = [n for n in names if len(n) == 2]
            longs = [n for n in names if n.startswith("--")]
            for s in shorts:
                allowed = SHORT_FLAGS.get(s, ((),))[0]
                if not set(longs) & set(allowed):
                    wrong.append(f"{' '.join(path)}: {s} is {longs}, the vocabulary says {allowed}")
    assert not wrong, "\n".join(wrong)


def _complete(shell: str, line: str) -> list[str]:
    env = {"_KXTOOL_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        words = line.split(" ")
        env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    else:
        env["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    out = kx(env_extra=env).stdout.decode()
    if shell == "zsh":  # _arguments '*: :(("a" "b"))'
        return [w.strip('"') for w in out.split("((", 1)[-1].split("))")[0].split()]
    return out.split()


# every option that takes one of a few values, and those values
CHOICE_OPTIONS = [
    ("dim --method", ["entropy", "entropy-analytic", "jl", "fourth-root", "all", "pip"]),
    ("dim --lang", ["auto", "zh", "en"]),
    ("wmd --metric", ["wmd", "wrd", "wcd", "rwmd", "sinkhorn"]),
    ("wmd --lang", ["auto", "zh", "en"]),
    ("hubness report --metric", ["cosine", "euclidean"]),
    ("hubness report --reduce", ["mp", "mp-gauss", "ls", "nicdm", "dsl", "csls"]),
    ("hubness sample --metric", ["euclidean", "cosine"]),
]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("line,values", CHOICE_OPTIONS, ids=[c[0] for c in CHOICE_OPTIONS])
def test_completions_offer_the_values_of_choice_options(shell, line, values):
    assert _complete(shell, f"kxtool {line} ") == values
    assert _complete(shell, f"kxtool {line} {values[0][:1]}") == [
        v for v in values if v.startswith(values[0][:1])
    ]


def test_help_shows_plain_argument_names():
    for cmd in (["shuffle"], ["wmd"], ["vectors", "convert"], ["hubness", "report"]):
        text = kx(*cmd, "--help").stdout.decode()
        arguments = text.split("Arguments:")[-1].split("Options:")[0]
        assert arguments.strip() and "<" not in arguments, text
        assert "{" not in text.splitlines()[0], text


@pytest.mark.parametrize(
    "args",
    [
        ["--json"],
        ["--shards", "3"],
        ["--shards", "2", "-o", "plain.txt"],
        ["--memory", "1K"],
        ["--memory", "lots"],
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, args):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\nb\n")
    proc = kx("shuffle", str(src), *args)
    assert proc.returncode == 2, proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["", "missing-dir/out.txt", "in.txt/out.txt"])
def test_an_unwritable_output_name_fails_before_any_work(tmp_path, name):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a\nb\n")
    vec = tmp_path / "v.txt"
    vec.write_text("a 1 0\nb 0 1\nc 1 1\n")
    for args in (
        ["shuffle", str(src), "-o", name],
        ["hubness", str(vec), "-k", "1", "--neighbors", name],
        ["vectors", "convert", str(vec), name],
    ):
        proc = kx(*args, cwd=tmp_path)
        assert proc.returncode == 1, (args, proc.stderr)
        line = proc.stderr.decode().strip()
        assert line.startswith("kxtool: error: ") and "\n" not in line, line
        assert "internal error" not in line


def test_hubness_help_shows_how_to_run_a_report():
    text = kx("hubness", "--help").stdout.decode()
    report = text.split("Options of the report")[-1]
    for option in ("--reduce", "--limit", "--neighbors", "-k, --k"):
        assert option in report, text
