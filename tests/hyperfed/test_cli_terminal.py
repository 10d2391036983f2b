"""What a person sees: ``hyperfed train`` prints progress bars and result tables, each log
line once, Flower's INFO lines only with ``-v``; ``hyperfed audit`` stays light.

The commands run as subprocesses, as a person runs them, with stdout and stderr together.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_cli import TINY  # the tiny config the other CLI tests run

REPO = Path(__file__).resolve().parents[2]
BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm refresh: "desc:  50%|█████     | 1/2 [..."


def hyperfed(*argv: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """Run ``hyperfed ARGV`` (or ``code``, a script that calls the CLI) in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("CI", None)  # as a person runs it: under CI with no terminal the bars are switched off
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "hyperfed.cli", *argv]
    return subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )


def text_lines(output: str) -> list[str]:
    """The non-empty lines that are not progress-bar refreshes (bars redraw with ``\\r``)."""
    return [line for line in re.split(r"[\r\n]", output) if line.strip() and not BAR.search(line)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("terminal")
    (root / "tiny.toml").write_text(TINY)
    done = hyperfed("train", str(root / "tiny.toml"), "--out", str(root / "run"), cwd=root)
    assert done.returncode == 0, done.stdout
    return root, done.stdout


def test_train_prints_bars_and_tables_and_no_line_twice(trained):
    _, output = trained
    lines = text_lines(output)
    assert any("Test loss per client at each method's selected round" in line for line in lines) and any(
        line.startswith("MEAN") for line in lines
    )
    assert BAR.search(output), "the rounds show progress bars"
    twice = [line for line, n in Counter(lines).items() if n > 1]
    assert not twice, twice
    assert not [line for line in lines if "flwr" in line or "INFO" in line], "no INFO lines without -v"
    assert "\x1b[" not in output.replace("\x1b[A", ""), "no coloured Flower console lines"


def test_verbose_shows_flower_and_hyperfed_info_each_once(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('methods = ["hyperlora", "fedavg", "local"]', 'methods = ["hyperlora"]'))
    done = hyperfed("train", str(config), "--out", str(tmp_path / "run"), "-v", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    lines = text_lines(done.stdout)
    assert sum(line == "INFO flwr: [ROUND 1/2]" for line in lines) == 1  # Flower's line, through our handler only
    assert any(line.startswith("INFO hyperfed.") for line in lines)
    assert "\x1b[92mINFO" not in done.stdout  # Flower's own coloured handler printed nothing
    assert not [line for line in lines if line.startswith("INFO flwr:") and not line[len("INFO flwr:") :].strip()]


def test_audit_of_a_run_imports_neither_peft_transformers_nor_flower(trained):
    root, _ = trained
    code = f"""
import json, sys
from hyperfed.cli import main
status = main(["audit", {str(root / "run")!r}])
print(json.dumps([status, sorted({{m.split(".")[0] for m in sys.modules}})]))
"""
    done = hyperfed(cwd=root, code=code)
    status, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0, done.stdout
    assert "audit PASSED" in done.stdout
    assert set(modules) & {"peft", "transformers", "flwr", "grpc", "ray"} == set()
