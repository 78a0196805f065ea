"""A peer implementation's worker process, spoken to in JSON lines (the side-by-side benchmarks' shared client).

The worker (``fork_runner.py``, ``hf_uag_runner.py``) runs in the peer's own
venv, reads one JSON request per line on stdin and answers one JSON line on
stdout; models load once, on its first request.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


class PeerWorker:
    """``python runner`` as a subprocess; :meth:`ask` sends a request and returns the answer."""

    def __init__(self, python: str, runner: Path, name: str, env: dict | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen([python, str(runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            pytest.fail(f"{self.name} stopped:\n{self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
