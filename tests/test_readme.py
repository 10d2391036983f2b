"""The README's runnable example must run as pasted."""

import re
import subprocess
import sys
from pathlib import Path

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
