"""Background lanes: a queue file of commands, run one at a time, that survives being stopped.

The book's runs take hours each on a CPU, more than fit between two interruptions. A *lane* is a
text file of shell commands, one per line (blank lines and ``#`` comments are skipped), worked
through from the top by ``sprec lane run QUEUE``:

* each command runs in its own process group with ``threads`` threads (``OMP_NUM_THREADS`` and
  friends: two lanes of one thread each keep a 2-core machine busy without oversubscribing it),
  its output appended, time-stamped, to ``QUEUE.log``;
* a command that succeeds moves to ``QUEUE.done`` (with its hours), one that fails to
  ``QUEUE.failed`` (with its exit status), and the next line starts;
* ``sprec lane stop QUEUE`` (or SIGTERM/SIGINT to the lane) stops the running command's whole
  process group and leaves its line at the head of the queue: ``sprec train`` and ``sprec cllmr
  train`` resume from their last checkpoint when the lane is started again;
* the file is read again before each command, so lines can be added, reordered or removed while
  the lane runs (the line being run is matched by its text when it finishes).

A command such as ``sprec train ... && sprec runs export`` exports the run into ``results/`` as soon
as it finishes, so that it can be committed before the machine goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pending(queue: Path) -> list[str]:
    """The queue's commands, in order (blank lines and ``#`` comments left out)."""
    if not queue.exists():
        raise FileNotFoundError(f"{queue}: no such queue file (one shell command per line)")
    return [line.strip() for line in queue.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _remove_line(queue: Path, command: str) -> None:
    """Take the first line equal to ``command`` out of ``queue``, keeping every other line as it is."""
    lines = queue.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == command:
            del lines[i]
            break
    tmp = queue.with_name(f"{queue.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, queue)  # whole or not at all: a kill here leaves the queue as it was


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:  # it has just exited
        pass


def pid_path(queue: Path) -> Path:
    return queue.with_name(queue.name + ".pid")


def run_lane(queue: str | Path, threads: int = 1, poll_s: float = 5.0) -> int:
    """Work through ``queue`` until it is empty or the lane is stopped; the number of commands that
    finished. See the module docstring."""
    queue = Path(queue)
    pending(queue)  # a missing queue file is an error before anything is written
    if (other := running_pid(queue)) is not None:  # two lanes on one queue would run its head twice
        raise RuntimeError(f"{queue}: a lane already runs it (pid {other}); `sprec lane stop {queue}` first")
    log, done, failed = (queue.with_name(queue.name + s) for s in (".log", ".done", ".failed"))
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARIABLES}}
    state = {"child": None, "stop": False}

    def stop(signum, _frame):
        state["stop"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            _kill_group(child.pid)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pid_path(queue).write_text(f"{os.getpid()}\n")
    finished = 0
    try:
        while not state["stop"]:
            commands = pending(queue)
            if not commands:
                break
            command, t0 = commands[0], time.time()
            _append(log, f"\n[{_stamp()}] lane {queue.name}: start: {command}\n")
            with log.open("a", encoding="utf-8") as out:
                state["child"] = child = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT,
                                                          env=env, start_new_session=True)
                killed = False
                while child.poll() is None:
                    if state["stop"] and not killed:  # a stop that came before the child existed
                        _kill_group(child.pid)
                        killed = True
                    time.sleep(poll_s)
            hours = (time.time() - t0) / 3600
            if state["stop"]:
                _append(log, f"[{_stamp()}] lane {queue.name}: stopped after {hours:.2f} h; the line stays at the head\n")
                break
            if child.returncode == 0:
                _append(done, f"{_stamp()}\t{hours:.2f} h\t{command}\n")
                finished += 1
            else:
                _append(failed, f"{_stamp()}\texit {child.returncode} after {hours:.2f} h\t{command}\n")
            _append(log, f"[{_stamp()}] lane {queue.name}: exit {child.returncode} after {hours:.2f} h\n")
            _remove_line(queue, command)
    finally:
        pid_path(queue).unlink(missing_ok=True)
    return finished


def running_pid(queue: Path) -> int | None:
    """The pid of the lane that runs ``queue``, if its pid file names a live process that is this
    lane (a killed lane leaves its pid file, and after a restart another process may have its pid)."""
    try:
        pid = int(pid_path(queue).read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    except PermissionError:  # alive, another user's
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # no /proc: trust the pid
        return pid
    return pid if queue.name in cmdline else None


def lane_status(queue: str | Path) -> dict:
    """What the lane on ``queue`` is doing: ``running`` (its pid is alive), the command it started
    last and when (from ``QUEUE.log``), the last line of progress it printed (a progress bar's last
    frame), how many commands wait, and how many are done or failed."""
    queue = Path(queue)
    log = queue.with_name(queue.name + ".log")
    running = running_pid(queue) is not None
    command = started = last = None
    if log.exists():
        text = log.read_text(encoding="utf-8", errors="replace")
        mark = text.rfind(": start: ")
        if mark >= 0:
            line_start = text.rfind("\n", 0, mark) + 1
            started = text[line_start + 1:line_start + 20]  # "[YYYY-mm-dd HH:MM:SS]"
            command = text[mark + len(": start: "):text.find("\n", mark)]
        frames = [f.strip() for f in text.replace("\r", "\n").splitlines() if f.strip()]
        last = frames[-1] if frames else None

    def count(suffix):
        path = queue.with_name(queue.name + suffix)
        return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0

    return {"queue": str(queue), "running": running, "command": command, "started": started, "last": last,
            "waiting": len(pending(queue)), "done": count(".done"), "failed": count(".failed")}


def stop_lane(queue: str | Path, wait_s: float = 120.0) -> bool:
    """Stop the lane running ``queue`` (its command too) and wait for it to exit; False if none runs."""
    path = pid_path(Path(queue))
    if not path.exists():
        return False
    pid = int(path.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return False
    deadline = time.time() + wait_s
    while path.exists() and time.time() < deadline:
        time.sleep(1)
    if path.exists():
        print(f"{queue}: the lane (pid {pid}) has not exited after {wait_s:.0f} s", file=sys.stderr)
    return True
