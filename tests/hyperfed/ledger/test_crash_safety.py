"""A process killed mid-write never leaves half a block behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hyperfed.ledger import EmbeddedLedger, Ledger

REPO = Path(__file__).resolve().parents[3]

WRITER_LOOP = textwrap.dedent("""
    import hashlib, sys
    from hyperfed.ledger import EmbeddedLedger
    ledger = EmbeddedLedger(sys.argv[1])
    for i in range(10**6):
        ledger.submit("register_client", f"c{i}", hashlib.sha256(str(i).encode()).hexdigest())
        print(i, flush=True)
""")

# Exit abruptly *inside* commit: after the block row is inserted, while state rows are
# being written (``sorted`` is the call that orders the write set, right after the INSERT).
EXIT_INSIDE_COMMIT = textwrap.dedent("""
    import builtins, os, sys
    import hyperfed.ledger.embedded.ledger as embedded
    from hyperfed.ledger import EmbeddedLedger, Ledger
    ledger = EmbeddedLedger(sys.argv[1])
    def first_write_then_die(items):
        yield builtins.sorted(items)[0]
        os._exit(3)
    embedded.sorted = first_write_then_die
    Ledger(ledger).record_checkpoint(0, "0" * 64, {})
""")


def run_python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_a_stream_of_commits(tmp_path):
    path = tmp_path / "ledger.db"
    proc = run_python(WRITER_LOOP, str(path))
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert acknowledged >= 40, proc.stderr.read()
    with EmbeddedLedger(path) as ledger:
        report = ledger.verify()
        assert report.ok, str(report)
        clients = Ledger(ledger).list_clients()
    # every acknowledged write survived; at most the in-flight one more
    assert acknowledged + 1 <= len(clients) <= acknowledged + 2
    assert report.head[0] == len(clients)  # block 0 is init, then one block per client


def test_exit_in_the_middle_of_a_commit_leaves_the_previous_state(tmp_path):
    path = tmp_path / "ledger.db"
    with EmbeddedLedger(path) as ledger:
        before = ledger.head()
    proc = run_python(EXIT_INSIDE_COMMIT, str(path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    with EmbeddedLedger(path) as ledger:
        assert ledger.head() == before
        assert ledger.verify().ok
        assert Ledger(ledger).latest_checkpoint() is None
        Ledger(ledger).record_checkpoint(0, "0" * 64, {})
        assert ledger.verify().ok and ledger.head()[0] == 1
