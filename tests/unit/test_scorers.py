"""Scorers on tiny random CLIP models: loading, formulas, batching, errors. Scores mean nothing."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from seppo_lib.config import ConfigError, EvalConfig
from seppo_lib.evaluation.scorers import (
    Scorer,
    ScorerError,
    ScorerNotInstalledError,
    build_scorer,
    build_scorers,
    clip_score_from_embeddings,
    pickscore_from_embeddings,
)
from seppo_lib.evaluation.scorers import base as scorers_base
from seppo_lib.storage import LocalStore
from tests.tiny_clip import PROJECTION_DIM, build_tiny_clip, random_images

PROMPTS = ["a red circle", "two blue squares", "x", "a very long prompt " * 30, "", "hello world"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 2 gives cosines of both signs on PROMPTS / random_images(6)."""
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "model", seed=2)


@pytest.fixture(scope="module")
def images() -> list:
    return random_images(len(PROMPTS))


def _cosines(model_dir: Path, images: list, prompts: list[str]) -> torch.Tensor:
    """Reference cosines straight from transformers, one pair at a time."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    proc = CLIPProcessor.from_pretrained(model_dir / "processor" if (model_dir / "processor").is_dir() else model_dir)
    out = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts, strict=True):
            inputs = proc(text=[prompt], images=[image], padding=True, truncation=True, max_length=77, return_tensors="pt")
            result = model(**inputs)
            out.append(torch.nn.functional.cosine_similarity(result.image_embeds, result.text_embeds)[0])
    return torch.stack(out)


# ---- formulas --------------------------------------------------------------------------


def test_formulas_on_hand_computed_numbers() -> None:
    """image (3,4), text (4,3): cos = (12+12)/(5*5) = 0.96.

    PickScore with logit_scale ln(100): 100 * 0.96 = 96; with ln(50): 48.
    CLIP score: 100 * max(0.96, 0) = 96; against text (-4,-3) cos = -0.96 -> 0.
    """
    img = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    txt = torch.tensor([[4.0, 3.0], [-4.0, -3.0]])
    pick = pickscore_from_embeddings(img, txt, torch.tensor(math.log(100.0)))
    assert pick.tolist() == pytest.approx([96.0, -96.0], abs=1e-4)
    assert pickscore_from_embeddings(img, txt, torch.tensor(math.log(50.0))).tolist() == pytest.approx([48.0, -48.0], abs=1e-4)
    assert clip_score_from_embeddings(img, txt).tolist() == pytest.approx([96.0, 0.0], abs=1e-4)


# ---- pickscore / clip -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["same", "subdir"])
def test_pickscore_loads_both_layouts_and_is_100_times_cosine(tmp_path: Path, images: list, layout: str) -> None:
    model_dir = build_tiny_clip(tmp_path / "pick", seed=2, logit_scale=math.log(100.0), processor=layout)
    scorer = build_scorer("pickscore", str(model_dir), batch_size=4)
    assert isinstance(scorer, Scorer) and scorer.name == "pickscore"
    scores = scorer.score(images, PROMPTS)
    assert len(scores) == len(PROMPTS) and all(isinstance(s, float) for s in scores)
    expected = 100.0 * _cosines(model_dir, images, PROMPTS)
    assert scores == pytest.approx(expected.tolist(), abs=1e-3)


def test_pickscore_uses_the_model_logit_scale(tmp_path: Path, images: list) -> None:
    """Same weights, logit_scale ln(50) instead of ln(100): every score halves."""
    at_100 = build_scorer("pickscore", str(build_tiny_clip(tmp_path / "a", seed=2, logit_scale=math.log(100.0))))
    at_50 = build_scorer("pickscore", str(build_tiny_clip(tmp_path / "b", seed=2, logit_scale=math.log(50.0))))
    full, half = at_100.score(images, PROMPTS), at_50.score(images, PROMPTS)
    assert half == pytest.approx([s / 2 for s in full], abs=1e-4)


def test_batching_invariance_and_determinism(clip_dir: Path, images: list) -> None:
    one = build_scorer("pickscore", str(clip_dir), batch_size=1).score(images, PROMPTS)
    four = build_scorer("pickscore", str(clip_dir), batch_size=4)
    first = four.score(images, PROMPTS)
    assert first == pytest.approx(one, rel=1e-5, abs=1e-5)
    assert four.score(images, PROMPTS) == first


def test_clip_score_is_100_times_clamped_cosine(clip_dir: Path, images: list) -> None:
    cos = _cosines(clip_dir, images, PROMPTS)
    assert (cos > 0).any() and (cos < 0).any(), "fixture must give cosines of both signs"
    scores = build_scorer("clip", str(clip_dir), batch_size=3).score(images, PROMPTS)
    assert scores == pytest.approx((100.0 * cos.clamp(min=0)).tolist(), abs=1e-3)


def test_mismatched_lengths_are_rejected(clip_dir: Path, images: list) -> None:
    with pytest.raises(ValueError, match="6 images but 2 prompts"):
        build_scorer("clip", str(clip_dir)).score(images, PROMPTS[:2])


# ---- aesthetic ---------------------------------------------------------------------------


def _unit_image_embeddings(model_dir: Path, images: list) -> torch.Tensor:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    pixels = CLIPProcessor.from_pretrained(model_dir)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    embs = out if isinstance(out, torch.Tensor) else out.pooler_output
    return embs / embs.norm(dim=-1, keepdim=True)


def test_aesthetic_single_linear_head(tmp_path: Path, clip_dir: Path, images: list) -> None:
    """Head w = (1, 0, ..., 0), b = 5: score = first coordinate of the unit image embedding + 5."""
    weight = torch.zeros(1, PROJECTION_DIM)
    weight[0, 0] = 1.0
    torch.save({"linear.weight": weight, "linear.bias": torch.tensor([5.0])}, tmp_path / "head.pth")
    scorer = build_scorer("aesthetic", f"{clip_dir}::{tmp_path / 'head.pth'}", batch_size=4)
    scores = scorer.score(images, PROMPTS)
    expected = _unit_image_embeddings(clip_dir, images)[:, 0] + 5.0
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    assert scorer.score(images, ["another prompt"] * len(images)) == scores  # the prompt is ignored


def test_aesthetic_official_mlp_layout_from_safetensors(tmp_path: Path, clip_dir: Path, images: list) -> None:
    """The LAION MLP has no activations, so its output is the chain of its five Linear layers."""
    gen = torch.Generator().manual_seed(0)
    dims = [PROJECTION_DIM, 1024, 128, 64, 16, 1]
    state = {}
    for index, d_in, d_out in zip((0, 2, 4, 6, 7), dims[:-1], dims[1:], strict=True):
        state[f"layers.{index}.weight"] = torch.randn(d_out, d_in, generator=gen) / math.sqrt(d_in)
        state[f"layers.{index}.bias"] = torch.randn(d_out, generator=gen)
    save_file(state, tmp_path / "head.safetensors")
    scores = build_scorer("aesthetic", f"{clip_dir}::{tmp_path / 'head.safetensors'}").score(images, PROMPTS)
    x = _unit_image_embeddings(clip_dir, images)
    for index in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    assert scores == pytest.approx(x[:, 0].tolist(), abs=1e-4)


def test_aesthetic_head_errors(tmp_path: Path, clip_dir: Path) -> None:
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, tmp_path / "l14.pth")
    with pytest.raises(ScorerError, match="expects 768-dim CLIP embeddings but the CLIP model gives 16"):
        build_scorer("aesthetic", f"{clip_dir}::{tmp_path / 'l14.pth'}")
    torch.save({"fc.weight": torch.zeros(1, 16)}, tmp_path / "odd.pth")
    with pytest.raises(ScorerError, match=r"keys \['fc.weight'\]"):
        build_scorer("aesthetic", f"{clip_dir}::{tmp_path / 'odd.pth'}")
    with pytest.raises(ConfigError, match="<clip_dir>::<head_file>"):
        build_scorer("aesthetic", str(clip_dir))


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pickscore", "clip"])
def test_missing_weights_name_the_scorer_and_config_key(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScorerError, match=rf"{name} scorer.*eval\.scorer_paths\.{name}"):
        build_scorer(name, None)
    with pytest.raises(ScorerError, match=rf"{name} scorer.*do not exist.*eval\.scorer_paths\.{name}") as info:
        build_scorer(name, str(tmp_path / "nowhere"))
    assert "\n" not in str(info.value)


def test_folder_that_is_not_a_clip_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScorerError, match="cannot load a transformers CLIPModel"):
        build_scorer("clip", str(tmp_path / "empty"))
    no_proc = build_tiny_clip(tmp_path / "noproc", processor="none")
    with pytest.raises(ScorerError, match="cannot load a CLIP processor"):
        build_scorer("pickscore", str(no_proc))


def test_unknown_scorer_and_world_with_weights() -> None:
    with pytest.raises(ConfigError, match="unknown scorer 'pickscor'"):
        build_scorer("pickscor", "x")
    with pytest.raises(ConfigError, match="world scorer takes no weights"):
        build_scorer("world", "some/path")


@pytest.mark.parametrize(("name", "module"), [("hpsv2", "hpsv2"), ("imagereward", "ImageReward")])
def test_optional_packages_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ScorerNotInstalledError, match=rf"pip install 'seppo\[{name}\]'") as info:
        build_scorer(name, str(tmp_path))
    assert isinstance(info.value, ImportError)


# ---- optional packages, wired through fakes of their public APIs ---------------------------


class _FakeReward:
    def __init__(self, name: str, device: str, download_root: str) -> None:
        self.loaded = (name, device, download_root)

    def eval(self) -> _FakeReward:
        return self

    def score(self, prompt: str, image: object) -> float:
        return len(prompt) + image.size[0] / 1000  # type: ignore[attr-defined]


def test_imagereward_wrapper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: list) -> None:
    fake = types.ModuleType("ImageReward")
    fake.load = lambda name, device, download_root: _FakeReward(name, device, download_root)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ImageReward", fake)
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    with pytest.raises(ScorerError, match="lacks med_config.json"):
        build_scorer("imagereward", str(tmp_path))
    (tmp_path / "med_config.json").write_text("{}")
    scorer = build_scorer("imagereward", str(tmp_path))
    assert scorer.model.loaded == (str(tmp_path / "ImageReward.pt"), "cpu", str(tmp_path))  # type: ignore[attr-defined]
    assert scorer.score(images[:2], ["ab", "abcd"]) == pytest.approx([2.04, 4.04])


class _FakeOpenClip(torch.nn.Module):
    """image features = unit(proj(mean pixel per channel)); text features = unit(first 3 token ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 3, bias=False)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        img = self.proj(image.mean(dim=(2, 3)))
        txt = text[:, :3].float()
        return {"image_features": img / img.norm(dim=-1, keepdim=True), "text_features": txt / txt.norm(dim=-1, keepdim=True)}


def _fake_hpsv2(monkeypatch: pytest.MonkeyPatch) -> None:
    open_clip = types.ModuleType("hpsv2.src.open_clip")

    def create_model_and_transforms(arch: str, pretrained: None, **kwargs: object) -> tuple:
        assert arch == "ViT-H-14" and pretrained is None and kwargs["output_dict"] is True
        return _FakeOpenClip(), None, lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)

    open_clip.create_model_and_transforms = create_model_and_transforms  # type: ignore[attr-defined]
    open_clip.get_tokenizer = lambda arch: (lambda texts: torch.tensor([[len(t) + 1, 1, 1] for t in texts]))  # type: ignore[attr-defined]
    for name, module in (("hpsv2", types.ModuleType("hpsv2")), ("hpsv2.src", types.ModuleType("hpsv2.src")),
                         ("hpsv2.src.open_clip", open_clip)):
        monkeypatch.setitem(sys.modules, name, module)


def test_hpsv2_wrapper_loads_checkpoint_and_scales_by_100(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """proj = identity and a pure-red image give image feature (1,0,0); prompt "ab" gives text (3,1,1)/sqrt(11).

    HPSv2 x 100 = 100 * 3/sqrt(11) = 90.453.
    """
    from PIL import Image

    _fake_hpsv2(monkeypatch)
    torch.save({"state_dict": {"proj.weight": torch.eye(3)}}, tmp_path / "HPS_v2_compressed.pt")
    scorer = build_scorer("hpsv2", str(tmp_path), batch_size=2)  # the folder's single *.pt
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert scorer.score([red, red, red], ["ab", "ab", "ab"]) == pytest.approx([100 * 3 / math.sqrt(11)] * 3, abs=1e-4)
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(ScorerError, match="holds 2 \\*.pt files"):
        build_scorer("hpsv2", str(tmp_path))


# ---- s3 locations, config wiring, world -------------------------------------------------------


def test_s3_location_is_downloaded_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: list) -> None:
    bucket = tmp_path / "bucket"
    build_tiny_clip(bucket / "models" / "clip", seed=2)
    calls: list[str] = []

    def fake_open_store(uri: str, settings: object = None) -> LocalStore:
        calls.append(uri)
        return LocalStore(bucket / uri.removeprefix("s3://bucket").lstrip("/"))

    monkeypatch.setattr(scorers_base, "open_store", fake_open_store)
    cache = tmp_path / "cache"
    scores = build_scorer("clip", "s3://bucket/models/clip", cache_dir=cache).score(images, PROMPTS)
    assert calls == ["s3://bucket/models"]
    assert build_scorer("clip", "s3://bucket/models/clip", cache_dir=cache).score(images, PROMPTS) == scores
    assert calls == ["s3://bucket/models"]  # the second build used the cache
    with pytest.raises(ScorerError, match="s3://bucket/models/missing do not exist"):
        build_scorer("clip", "s3://bucket/models/missing", cache_dir=cache)


def test_build_scorers_from_eval_config() -> None:
    scorers = build_scorers(EvalConfig(scorers=["world"]))
    assert list(scorers) == ["world"] and scorers["world"].name == "world"
    with pytest.raises(ConfigError, match="eval.scorer_paths has pickscore which eval.scorers does not list"):
        build_scorers(EvalConfig(scorers=["world"], scorer_paths={"pickscore": "x"}))


def test_world_scorer_wraps_ground_truth() -> None:
    """A rendered ground-truth image scores 1, the same prompt on a colour-wrong image scores 0."""
    pytest.importorskip("seppo_lib.world.scorer")
    from seppo_lib.world.grammar import parse
    from seppo_lib.world.render import render, render_wrong

    text = "a red circle left of a blue square"
    right = render(parse(text), seed=3)
    wrong, _ = render_wrong(parse(text), seed=3, attribute="colour")
    scorer = build_scorer("world")
    details = scorer.score_details([right, wrong], [text, text])  # type: ignore[attr-defined]
    assert details[0]["all"] == 1.0 and details[1]["all"] == 0.0 and details[1]["colour"] == 0.0
    assert scorer.score([right, wrong], [text, text]) == [1.0, 0.0]
