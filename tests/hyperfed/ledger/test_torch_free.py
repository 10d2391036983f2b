"""The ledger client is torch-free: talking to a ledger never loads a model stack."""

import subprocess
import sys

HEAVY = ("torch", "peft", "transformers", "flwr", "ray", "safetensors")


def test_the_ledger_packages_import_no_model_or_federation_stack():
    code = (
        "import sys\n"
        "import hyperfed.ledger, hyperfed.ledger.embedded, hyperfed.ledger.gateway, hyperfed.ledger.devnet\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
