"""Import weight: what a light entry point must not pull in, checked in a fresh interpreter.

Each check runs ``python -c`` in a subprocess (this test process has long imported torch and
Flower) and reads ``sys.modules`` afterwards. No wall-clock assertions: a module that is not
imported costs nothing, on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyperfed.errors import HyperFedError, MissingExtraError
from hyperfed.extras import require_extra

REPO = Path(__file__).resolve().parents[2]
FLOWER = ("flwr", "grpc", "ray")
FABRIC = ("fabric_protos", "fabric_chaincode_python", "chaincode")
HEAVY = ("torch", "peft", "transformers", *FLOWER)


def loaded_after(code: str, cwd: Path) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_hypernet_pulls_in_no_flower_and_no_fabric(tmp_path):
    assert loaded_after("import hypernet", tmp_path) & {*FLOWER, *FABRIC} == set()


@pytest.mark.parametrize(
    "code",
    [
        "import hypernet",
        "import hyperfed",
        "from hyperfed.errors import UnknownClientError",
        "from hypernet.errors import ConfigError, HyperFedError",
        "from hyperfed import MissingExtraError, TamperDetectedError",
        "import hyperfed.cli",
    ],
)
def test_error_classes_and_package_imports_are_light(code, tmp_path):
    assert loaded_after(code, tmp_path) & {*HEAVY, *FABRIC} == set()


def test_help_of_every_command_is_light(tmp_path):
    code = """
import argparse, contextlib, io
from hyperfed.cli import build_parser, main
sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
for argv in [["--help"], *([name, "--help"] for name in sub.choices)]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert "usage: hyperfed" in out.getvalue(), argv
"""
    assert loaded_after(code, tmp_path) & {*HEAVY, *FABRIC} == set()


def test_the_audit_module_needs_neither_peft_transformers_nor_flower(tmp_path):
    assert loaded_after("import hyperfed.rundir.audit", tmp_path) & {"peft", "transformers", *FLOWER} == set()
    # (running an audit on a real run is checked in test_cli_terminal.py)


def test_a_missing_extra_names_the_pip_install_that_fixes_it():
    with pytest.raises(MissingExtraError, match=r"pip install 'hyperfed\[simulation\]'") as caught:
        require_extra("simulation", "json", "no_such_module_for_hyperfed", feature="the thing")
    assert "no_such_module_for_hyperfed" in str(caught.value) and "json" not in str(caught.value).split("needs")[1]
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, HyperFedError)
    require_extra("fabric", "json", feature="nothing missing")  # no error
