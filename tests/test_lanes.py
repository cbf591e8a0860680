"""The background lanes (sprec_lib/lanes.py): order, bookkeeping, threads, and stopping."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sprec_lib.lanes import lane_status, pending, pid_path, run_lane, stop_lane


def test_a_lane_runs_its_queue_in_order_and_files_each_command(tmp_path):
    queue = tmp_path / "q.txt"
    queue.write_text("# a comment\n"
                     f"echo first >> {tmp_path}/order\n"
                     "\n"
                     "exit 3\n"
                     f"echo threads=$OMP_NUM_THREADS >> {tmp_path}/order\n")
    pid_path(queue).write_text(f"{os.getpid()}\n")  # left by a killed lane; the pid now another process's
    assert run_lane(queue, threads=1, poll_s=0.05) == 2
    assert (tmp_path / "order").read_text() == "first\nthreads=1\n"
    assert pending(queue) == []  # every command left the queue
    assert queue.read_text() == "# a comment\n\n"  # the rest of the file is kept as it was
    done = (tmp_path / "q.txt.done").read_text().splitlines()
    assert [line.split("\t")[-1] for line in done] == [f"echo first >> {tmp_path}/order",
                                                        f"echo threads=$OMP_NUM_THREADS >> {tmp_path}/order"]
    failed = (tmp_path / "q.txt.failed").read_text().splitlines()
    assert len(failed) == 1 and failed[0].split("\t")[1].startswith("exit 3 ") and failed[0].endswith("\texit 3")
    assert not pid_path(queue).exists()
    status = lane_status(queue)
    assert status["command"] == f"echo threads=$OMP_NUM_THREADS >> {tmp_path}/order"  # the last one started
    assert (status["running"], status["waiting"], status["done"], status["failed"]) == (False, 0, 2, 1)


def test_lines_added_while_the_lane_runs_are_run_too(tmp_path):
    queue = tmp_path / "q.txt"
    queue.write_text(f"echo 'echo second >> {tmp_path}/order' >> {queue}\n")  # the first command appends the second
    assert run_lane(queue, poll_s=0.05) == 2
    assert (tmp_path / "order").read_text() == "second\n"


def test_stopping_a_lane_kills_its_command_and_keeps_the_line(tmp_path):
    queue = tmp_path / "q.txt"
    queue.write_text(f"sleep 60 && touch {tmp_path}/late\necho next > {tmp_path}/next\n")
    lane = subprocess.Popen([sys.executable, "-c", f"from sprec_lib.lanes import run_lane; run_lane({str(queue)!r}, poll_s=0.05)"],
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 30
    while not (tmp_path / "q.txt.log").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert pid_path(queue).exists()
    status = lane_status(queue)
    assert status["running"] and status["command"] == f"sleep 60 && touch {tmp_path}/late" and status["waiting"] == 2
    with pytest.raises(RuntimeError, match="a lane already runs it"):  # a second lane would run the head twice
        run_lane(queue)
    t0 = time.time()
    assert stop_lane(queue, wait_s=30)
    assert lane.wait(timeout=30) == 0 and time.time() - t0 < 20  # the sleep was killed, not waited for
    assert pending(queue) == [f"sleep 60 && touch {tmp_path}/late", f"echo next > {tmp_path}/next"]
    assert not (tmp_path / "next").exists() and not (tmp_path / "late").exists()
    assert "stays at the head" in (tmp_path / "q.txt.log").read_text()
    assert not stop_lane(queue)  # nothing runs it any more


def test_a_missing_queue_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such queue file"):
        run_lane(tmp_path / "nope.txt")
