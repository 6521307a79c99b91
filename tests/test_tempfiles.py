"""kxtool.tempfiles: temporary names carry their owner, and what a killed run left behind is
removed by the next run (tested with a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from kxtool import tempfiles


def test_names_carry_the_owner_and_a_live_owner_is_not_gone(tmp_path):
    fd, path = tempfiles.make_temp_file(str(tmp_path), "out.txt")
    os.close(fd)
    owner = tempfiles.owner_of(os.path.basename(path))
    assert owner is not None and owner.pid == os.getpid()
    assert not owner.gone()
    d = tempfiles.make_temp_dir(str(tmp_path))
    assert tempfiles.owner_of(os.path.basename(d)) == owner
    assert tempfiles.stale_in(str(tmp_path)) == []


def test_a_dead_owner_is_gone_and_its_leftovers_are_removed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer runs (reuse within the test is very unlikely)
    host = tempfiles.owner_tag().split("@")[0]
    dead_file = tmp_path / f".out.txt.{host}@{child.pid}-1.abcd1234.kxtmp"
    dead_file.write_bytes(b"x")
    dead_dir = tmp_path / f"kxtool-{host}@{child.pid}-1.abcd1234"
    (dead_dir / "sub").mkdir(parents=True)
    # the same pid with another start time is another process: gone too
    me = tmp_path / f".out.txt.{host}@{os.getpid()}-1.abcd1234.kxtmp"
    me.write_bytes(b"x")
    other_host = tmp_path / f".out.txt.elsewhere@{child.pid}-1.abcd1234.kxtmp"
    other_host.write_bytes(b"x")
    unrelated = tmp_path / ".out.txt.abcdef.kxtmp"  # not an owner-tagged name
    unrelated.write_bytes(b"x")
    assert tempfiles.stale_in(str(tmp_path), "other.txt") == []
    removed = tempfiles.remove_stale(str(tmp_path))
    assert sorted(removed) == sorted(map(str, (dead_file, dead_dir, me)))
    assert sorted(os.listdir(tmp_path)) == sorted([other_host.name, unrelated.name])


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _leftovers(*dirs) -> list[str]:
    found = []
    for d in dirs:
        found += [n for n in os.listdir(d) if tempfiles.is_temp_name(n)]
    return found


@pytest.mark.parametrize("stage", ["pass 1", "pass 2"])
def test_a_killed_shuffle_is_cleaned_up_by_the_next_run(tmp_path, stage):
    src = tmp_path / "in.txt"
    with open(src, "wb") as f:
        for block in range(40):
            f.write(b"".join(b"%07d some words on a line\n" % (block * 50000 + i)
                             for i in range(50000)))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "shuffled.txt"
    args = [sys.executable, "-m", "kxtool", "shuffle", str(src), "--memory", "8M", "-j", "2",
            "-T", str(tmp), "-o", str(out), "--seed", "5"]
    proc = subprocess.Popen(args, start_new_session=True, stderr=subprocess.PIPE)

    def runs_written() -> bool:
        for d in os.listdir(tmp):
            p = tmp / d
            if p.is_dir() and any(os.path.getsize(p / n) > 0 for n in os.listdir(p)):
                return True
        return False

    def output_started() -> bool:
        return any(n.endswith(".kxtmp") for n in os.listdir(out_dir))

    seen = _wait_for(runs_written if stage == "pass 1" else output_started)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not seen or proc.returncode != -signal.SIGKILL:
        pytest.skip("the shuffle finished before it could be killed")
    time.sleep(0.2)  # let the killed workers go
    assert _leftovers(tmp, out_dir), "the kill left nothing to clean up"
    assert not out.exists()

    again = subprocess.run([*args, "--verbose"], capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert b"left by a run that was killed" in again.stderr
    assert _leftovers(tmp, out_dir) == []
    assert os.listdir(tmp) == []
    assert os.listdir(out_dir) == ["shuffled.txt"]
    assert sorted(out.read_bytes().splitlines()) == src.read_bytes().splitlines()
