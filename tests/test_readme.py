"""The README's runnable example must run as pasted."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_quickstart_runs(tmp_path):
    code = python_blocks()[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sha256 of alice's adapter" in result.stdout
    assert (tmp_path / "adapters" / "alice" / "adapter_model.safetensors").exists()
    # the printed losses went down for every client
    pairs = re.findall(r"(\d+\.\d+) -> (\d+\.\d+)", result.stdout)
    assert len(pairs) == 3 and all(float(b) < float(a) for a, b in pairs)


def extending_examples() -> dict[str, str]:
    """``{section title: code}`` of the python blocks under "Extending HyperFed"."""
    section = README.read_text().split("## Extending HyperFed\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"### (.+?)\n.*?```python\n(.*?)```", section, flags=re.S))


#: What each example prints when it works (it fails loudly otherwise).
EXPECTED = {
    "A new generator": (
        "reloaded as UnitHyperLoRA (hyperlora-unit); bob's adapter identical: True",
        "the server's generator: UnitHyperLoRA",
    ),
    "A new ledger backend": "{'register_client': 1} active",
    "A new forget mode": "replayed [3] vs [1, 2, 3] | same weights: True",
}


def test_every_extending_example_is_checked():
    assert set(extending_examples()) == set(EXPECTED)


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_extending_example_runs_as_pasted(title, tmp_path):
    env = {**os.environ, "HYPERFED_CACHE": str(tmp_path / "cache")}
    code = extending_examples()[title]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = EXPECTED[title]
    for line in (expected,) if isinstance(expected, str) else expected:
        assert line in result.stdout, result.stdout
