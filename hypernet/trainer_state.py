"""The trainer's state as flat named tensors (a safetensors file holds it as is).

Key layout (``<owner>/<state key>``; a state key never contains ``/``)::

    shared/<parameter name>/<state key>   shared optimizer (Adam: step, exp_avg, exp_avg_sq;
                                          SGD: momentum_buffer), by the generator's parameter name
    base/<parameter name>/<state key>     the base adapters' SGD (only with ``base_lr``)
    client/<client id>/<state key>        one client's embedding, keyed by the client's own id
    trainer/step_count                    optimizer steps taken (int64 scalar)
    trainer/sampler_state                 RNG state of client and batch sampling (uint8)

Every entry of a client sits under ``client/<client id>/``, so one client's state can be
removed from a file (:func:`remove_client_state`) without touching any other entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from hypernet.errors import CheckpointMismatchError, CorruptFileError

__all__ = [
    "CLIENT_PREFIX",
    "STEP_COUNT_KEY",
    "SAMPLER_STATE_KEY",
    "optimizer_state_tensors",
    "load_optimizer_state",
    "client_of_key",
    "clients_in_state",
    "remove_client_state",
]

CLIENT_PREFIX = "client/"
TRAINER_PREFIX = "trainer/"
STEP_COUNT_KEY = "trainer/step_count"
SAMPLER_STATE_KEY = "trainer/sampler_state"

State = dict[str, torch.Tensor]


def optimizer_state_tensors(
    optimizers: Mapping[str, torch.optim.Optimizer],
    parameter_names: Mapping[int, str],
    client_of: Mapping[int, str],
) -> State:
    """Each optimizer's tensor state, named by owner (see the module docstring).

    Parameters
    ----------
    optimizers:
        Group name (``shared``, ``base``, ``client``) → optimizer.
    parameter_names:
        ``id(parameter)`` → its name in the generator's state dict.
    client_of:
        ``id(embedding parameter)`` → client id.
    """
    out: State = {}
    for group_name, optimizer in optimizers.items():
        for param, state in optimizer.state.items():
            pid = id(param)
            owner = f"client/{client_of[pid]}" if pid in client_of else f"{group_name}/{parameter_names.get(pid, '?')}"
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"{owner}/{key}"] = value.detach().to("cpu").contiguous()
    return out


def load_optimizer_state(
    optimizers: Mapping[str, torch.optim.Optimizer | None],
    named_parameters: Mapping[str, torch.nn.Parameter],
    client_parameters: Mapping[str, torch.nn.Parameter],
    state: Mapping[str, torch.Tensor],
) -> None:
    """Copy the ``shared/``, ``base/`` and ``client/`` entries of ``state`` into ``optimizers``.

    Entries of an optimizer that is ``None`` or absent, and of clients not in
    ``client_parameters`` (e.g. a forgotten client), are skipped; ``trainer/`` entries are
    left to the caller.

    Raises
    ------
    CorruptFileError
        An entry names a shared parameter the generator does not have, or is not of the
        ``<owner>/<state key>`` form.
    CheckpointMismatchError
        A per-parameter tensor has another shape than its parameter.
    """
    for key, value in state.items():
        if key.startswith(TRAINER_PREFIX):
            continue
        owner, sep, state_key = key.rpartition("/")
        group, sep2, name = owner.partition("/")
        if not (sep and sep2 and name and state_key):
            raise CorruptFileError(f"optimizer state key {key!r} is not <group>/<name>/<state key>")
        optimizer = optimizers.get(group)
        if optimizer is None:
            continue
        if group == "client":
            if name not in client_parameters:
                continue
            param = client_parameters[name]
        else:
            found = named_parameters.get(name)
            if found is None:
                raise CorruptFileError(f"optimizer state for unknown parameter {name!r}")
            param = found
        if state_key != "step" and value.dim() > 0 and value.shape != param.shape:
            raise CheckpointMismatchError(
                f"optimizer state {key}: shape {tuple(value.shape)} != parameter shape {tuple(param.shape)}"
            )
        tensor = value.clone() if state_key == "step" else value.to(device=param.device).clone()
        optimizer.state[param][state_key] = tensor


def client_of_key(key: str) -> str | None:
    """The client id a state key belongs to (``client/<id>/<state key>``), else ``None``."""
    if not key.startswith(CLIENT_PREFIX):
        return None
    client_id, sep, _ = key[len(CLIENT_PREFIX) :].rpartition("/")
    return client_id if sep else None


def clients_in_state(keys: Iterable[str]) -> set[str]:
    """Client ids with at least one entry among ``keys`` (a state dict or a file's key list)."""
    return {cid for key in keys if (cid := client_of_key(key)) is not None}


def remove_client_state(state: Mapping[str, torch.Tensor], client_id: str) -> State:
    """``state`` without ``client_id``'s entries; every other entry is kept as is.

    Matches the id exactly: removing ``"a"`` keeps ``"a/1"``'s entries.
    """
    return {k: v for k, v in state.items() if client_of_key(k) != client_id}
