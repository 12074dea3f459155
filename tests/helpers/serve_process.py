"""Real `bpcr serve` processes for the team board's tests: started on a free port of 127.0.0.1, waited for
(bounded), stopped or killed with SIGKILL.

``python -m tests.helpers.serve_process --kill-at STEP ...`` serves a board that kills itself (SIGKILL) when
a submission reaches STEP (:attr:`bpcr.serve.board.Board.observe`): "received", "checked", "scored",
"written" (inside the transaction, before the commit) or "committed".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ROOT

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def board(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/board", timeout=30) as answer:
            return json.loads(answer.read())

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start(args: list[str], log: Path, kill_at: str | None = None) -> Server:
    """``bpcr serve ARGS`` (or the self-killing board, with ``kill_at``) on a free port; returns once it answers."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if kill_at is None:
        command = [sys.executable, "-m", "bpcr", "serve", *args, "--port", str(port)]
    else:
        command = [sys.executable, "-m", "tests.helpers.serve_process", "--kill-at", kill_at, "--port", str(port), *args]
    handle = open(log, "ab")  # noqa: SIM115 - the child writes to it for its life
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    handle.close()
    server = Server(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the board exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            server.board()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the board did not answer in {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")


def _serve_killing_itself() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--kill-at", "--port", "--gt", "--data", "--manifest", "--db"):
        parser.add_argument(flag)
    given = parser.parse_args()
    import uvicorn

    from bpcr.serve.app import create_app
    from bpcr.serve.board import open_board

    board = open_board(given.gt, given.data, given.manifest, db=given.db)

    def observe(step: str) -> None:
        if step == given.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    board.observe = observe
    uvicorn.run(create_app(board), host="127.0.0.1", port=int(given.port), log_level="warning")


if __name__ == "__main__":
    _serve_killing_itself()
