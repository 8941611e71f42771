"""CLIP-based scorers: PickScore, CLIP score and the LAION aesthetic predictor v2.

All three load a `transformers` CLIPModel folder; the processor files (tokenizer + image
processor) sit in the same folder or in its `processor/` subfolder. The score formulas are pure
tensor functions so they can be checked on hand-computed numbers.
"""

from __future__ import annotations

import abc

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from seppo_lib.evaluation.scorers.base import ScorerError, batches, check_pairs, config_key
from seppo_lib.models import require_safetensors

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: Layer indices of the official LAION aesthetic MLP (`sac+logos+ava1-l14-linearMSE.pth`):
#: Linear-Dropout-Linear-Dropout-Linear-Dropout-Linear-Linear, no activations.
AESTHETIC_MLP_LINEARS = (0, 2, 4, 6, 7)


# ---- formulas ------------------------------------------------------------------------


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def pickscore_from_embeddings(image_embs: torch.Tensor, text_embs: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Official PickScore per (image i, prompt i): `logit_scale.exp() * <t_i/|t_i|, v_i/|v_i|>`.

    This is the diagonal of the official `model.logit_scale.exp() * (text_embs @ image_embs.T)`;
    for PickScore_v1 `logit_scale.exp()` is 100, so this is the "x100" number papers report.
    """
    return logit_scale.exp() * (_normalize(text_embs) * _normalize(image_embs)).sum(dim=-1)


def clip_score_from_embeddings(image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
    """CLIP score per pair: `100 * max(cos(v_i, t_i), 0)` (torchmetrics' scale; clamped per image)."""
    cosine = (_normalize(text_embs) * _normalize(image_embs)).sum(dim=-1)
    return 100.0 * cosine.clamp(min=0.0)


# ---- loading --------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_clip(scorer: str, directory: Path, device: str) -> tuple[Any, Any]:
    """(CLIPModel in eval mode on `device`, processor) from a transformers-format folder."""
    from transformers import AutoProcessor, CLIPModel

    if not directory.is_dir():
        raise ScorerError(f"the {scorer} scorer needs a CLIP model folder but {directory} is not a folder; fix {config_key(scorer)}")
    proc_dir = directory / "processor" if (directory / "processor").is_dir() else directory
    try:
        require_safetensors(directory, "CLIP model")
        model = CLIPModel.from_pretrained(directory, use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # ModelError is a RuntimeError
        raise ScorerError(
            f"the {scorer} scorer cannot load a transformers CLIPModel from {directory} ({_first_line(err)}); "
            f"fix {config_key(scorer)}"
        ) from None
    try:
        processor = AutoProcessor.from_pretrained(proc_dir)
    except (OSError, ValueError, KeyError) as err:
        processor, reason = None, _first_line(err)
    else:
        reason = "it has no tokenizer or no image processor"
    if processor is None or getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise ScorerError(
            f"the {scorer} scorer cannot load a CLIP processor from {proc_dir} ({reason}); put the processor "
            f"files (tokenizer + preprocessor_config.json) in {directory} or {directory / 'processor'}"
        )
    model.float().eval().requires_grad_(False).to(device)  # fp32 whatever the checkpoint's dtype
    return model, processor


def _pooled(out: Any) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x a ModelOutput whose pooler_output they are."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _ClipEmbedder:
    """Batched, deterministic image and text embeddings of one CLIPModel."""

    def __init__(self, model: Any, processor: Any, device: str, batch_size: int) -> None:
        self.model, self.processor, self.device, self.batch_size = model, processor, device, batch_size
        self.max_length = min(77, int(model.config.text_config.max_position_embeddings))

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return _pooled(self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device)))

    def texts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.processor.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return _pooled(
            self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        )


class _PairScorer(abc.ABC):
    """Shared batching for scorers that compare image i with prompt i through CLIP embeddings."""

    name = ""

    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        model, processor = load_clip(self.name, path, device)
        self.embedder = _ClipEmbedder(model, processor, device, batch_size)

    @abc.abstractmethod
    def _formula(self, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        """Per-pair score from normalized image and text embeddings."""

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        check_pairs(images, prompts)
        out: list[float] = []
        with torch.no_grad():
            for part in batches(len(images), self.embedder.batch_size):
                img, txt = self.embedder.images(images[part]), self.embedder.texts(prompts[part])
                out.extend(self._formula(img.float(), txt.float()).cpu().tolist())
        return out


class PickScoreScorer(_PairScorer):
    """PickScore (Kirstain et al. 2023) with the official formula; about 20-23 for SD1.5-class images."""

    name = "pickscore"

    def _formula(self, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        return pickscore_from_embeddings(image_embs, text_embs, self.embedder.model.logit_scale.float())


class ClipScoreScorer(_PairScorer):
    """CLIP score `100 * max(cos, 0)` with any transformers CLIPModel."""

    name = "clip"

    def _formula(self, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
        return clip_score_from_embeddings(image_embs, text_embs)


# ---- aesthetic ------------------------------------------------------------------------


class _AestheticMLP(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ScorerError(f"aesthetic head {path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_aesthetic_head(path: Path, embed_dim: int) -> nn.Module:
    """The official LAION MLP (`layers.N.*` keys) or a single Linear (`linear.*` or bare `weight`/`bias`)."""
    if not path.is_file():
        raise ScorerError(f"aesthetic head {path} is not a file; fix {config_key('aesthetic')}")
    try:
        state = _read_state_dict(path)
    except ScorerError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise ScorerError(f"cannot read aesthetic head {path} ({_first_line(err)}); expected a .pth/.pt state dict or .safetensors") from None
    keys = set(state)
    if {f"layers.{i}.weight" for i in AESTHETIC_MLP_LINEARS} <= keys:
        in_dim = int(state["layers.0.weight"].shape[1])
        head: nn.Module = _AestheticMLP(in_dim)
    elif {"linear.weight", "linear.bias"} <= keys or {"weight", "bias"} <= keys:
        prefix = "linear." if "linear.weight" in keys else ""
        state = {"weight": state[prefix + "weight"], "bias": state[prefix + "bias"]}
        if state["weight"].ndim != 2 or state["weight"].shape[0] != 1:
            raise ScorerError(f"aesthetic head {path}: weight has shape {tuple(state['weight'].shape)}, expected (1, dim)")
        in_dim = int(state["weight"].shape[1])
        head = nn.Linear(in_dim, 1)
    else:
        raise ScorerError(
            f"aesthetic head {path} has keys {sorted(keys)[:8]}; expected the LAION MLP (layers.0.weight ... "
            "layers.7.bias) or a single Linear (linear.weight/linear.bias or weight/bias)"
        )
    if in_dim != embed_dim:
        raise ScorerError(
            f"aesthetic head {path} expects {in_dim}-dim CLIP embeddings but the CLIP model gives {embed_dim}; "
            "the LAION v2 head needs openai/clip-vit-large-patch14 (768)"
        )
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ScorerError(f"aesthetic head {path} does not fit its layout ({_first_line(err)})") from None
    return head.eval().requires_grad_(False)


class AestheticScorer:
    """LAION aesthetic predictor v2: head(normalize(CLIP image embedding)); ignores the prompt."""

    name = "aesthetic"

    def __init__(self, clip_dir: Path, head_path: Path, device: str = "cpu", batch_size: int = 16) -> None:
        model, processor = load_clip(self.name, clip_dir, device)
        self.embedder = _ClipEmbedder(model, processor, device, batch_size)
        self.head = load_aesthetic_head(head_path, self.embedder.embed_dim).to(device)

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        check_pairs(images, prompts)
        out: list[float] = []
        with torch.no_grad():
            for part in batches(len(images), self.embedder.batch_size):
                embs = _normalize(self.embedder.images(images[part]).float())
                out.extend(self.head(embs)[:, 0].cpu().tolist())
        return out
