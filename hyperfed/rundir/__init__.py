"""A run on disk: its layout, what writes it during training, and what checks it afterwards.

* :mod:`~hyperfed.rundir.layout` — :class:`RunDirectory`, every path of a run and its atomic
  readers and writers;
* :mod:`~hyperfed.rundir.fingerprints` — what the ledger knows of a checkpoint (shared-weights
  hash, embedding commitments), computed in memory or read back from the files;
* :mod:`~hyperfed.rundir.recorder` — :class:`~hyperfed.rundir.recorder.RunRecorder`, which
  training calls so the run directory and the ledger get every registration, checkpoint and
  generated adapter;
* :mod:`~hyperfed.rundir.audit` — :func:`~hyperfed.rundir.audit.audit_run`, which recomputes
  every hash from the files and checks it against the ledger (never writes).

The ledger client itself (:mod:`hyperfed.ledger`) knows nothing of runs or of torch.
"""

from hyperfed.rundir.layout import (
    OPTIMIZER_FILE,
    RunDirectory,
    client_file_name,
    client_from_file_name,
    load_optimizer_file,
)

__all__ = [
    "RunDirectory",
    "OPTIMIZER_FILE",
    "client_file_name",
    "client_from_file_name",
    "load_optimizer_file",
]
