"""Training state (optimizer, LR scheduler, RNG, data position) as safetensors + JSON.

No pickle: optimizer tensors go to `optimizer.safetensors` with keys
`state.<param index>.<name>`; everything else is JSON.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seppo_lib.errors import CheckpointError

IMPL_KEYS = ("foreach", "fused")  # optimizer param-group flags that pick a kernel, not a numeric setting


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_training_state(
    out_dir: str | Path,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    progress: dict[str, Any],
) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"optimizer state {name!r} is not a tensor; cannot save without pickle")
            tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(out_dir / "optimizer.safetensors"))
    groups = [{k: _json_safe(v) for k, v in g.items()} for g in sd["param_groups"]]
    sched = {k: _json_safe(v) for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    save_file({"torch": torch.get_rng_state()}, str(out_dir / "rng.safetensors"))
    doc = {
        "param_groups": groups,
        "lr_scheduler": sched,
        "progress": progress,
        "python_rng": _json_safe_rng(random.getstate()),
        "numpy_rng": np.random.get_state(legacy=False),
    }
    (out_dir / "trainer.json").write_text(json.dumps(doc, default=_numpy_default))


def _json_safe_rng(state: tuple) -> list:  # type: ignore[type-arg]
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _numpy_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"not JSON serializable: {type(value)}")


def load_training_state(state_dir: str | Path, optimizer: torch.optim.Optimizer, lr_scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, LR scheduler and RNG states; returns the saved progress dict."""
    state_dir = Path(state_dir)
    try:
        doc = json.loads((state_dir / "trainer.json").read_text())
        tensors = load_file(str(state_dir / "optimizer.safetensors"))
        rng = load_file(str(state_dir / "rng.safetensors"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"unreadable training state in {state_dir}: {err}") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = doc["param_groups"]
    for group, current in zip(groups, optimizer.param_groups, strict=False):
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        # the kernel choice (train.adamw_impl) is this run's setting, not the saved one
        group.update({k: current[k] for k in IMPL_KEYS if k in current})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    lr_scheduler.load_state_dict({**doc["lr_scheduler"], "lr_lambdas": [None] * len(groups)})
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = doc["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    np_state = doc["numpy_rng"]
    np_state["state"]["key"] = np.array(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    return doc["progress"]
