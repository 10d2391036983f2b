"""Execute the notebooks in place at their default sizes, keeping their outputs.

``make notebooks`` runs this, so the notebooks in the repository show the tables and plots
of a real run to anyone browsing it. The test suite executes them again, fresh and small
(``tests/notebooks/test_notebooks.py``); this script is for the committed copies only.

Usage: ``python notebooks/execute_all.py [NAME.ipynb ...]`` (default: every notebook here).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "hyperfed"
CELL_TIMEOUT_S = 1800

log = logging.getLogger("notebooks")


def kernel_specs(root: Path) -> KernelSpecManager:
    """A kernelspec folder with one kernel, this interpreter: no other kernel on the machine is used."""
    spec = root / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


def execute_in_place(path: Path, specs: KernelSpecManager) -> float:
    """Run ``path`` top to bottom at its default sizes and write it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    start = time.perf_counter()
    NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, startup_timeout=300, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["hyperfed"] = {"executed_by": "notebooks/execute_all.py", "fast": False,
                               "seconds": round(time.perf_counter() - start)}
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)  # a failed run leaves the committed copy as it was
    return time.perf_counter() - start


def main(names: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.pop("HYPERFED_NOTEBOOK_FAST", None)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # plots become PNG outputs
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as kernels:
        specs = kernel_specs(Path(kernels))
        for path in paths:
            log.info("executing %s …", path.name)
            log.info("%s: done in %.0f s", path.name, execute_in_place(path, specs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
