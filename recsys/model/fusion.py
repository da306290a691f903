"""Learned fusion of the text vector with the item's numeric signals, trained over cached vectors.

The item documents can carry price, sales and rating as words, but a template may drop them and an
encoder reads "£4.95" poorly. Here the numbers enter as features through a small learned projection:

    fused(i) = normalise( v_i + A v_i + MLP(f_i) )

v_i is the item's (fine-tuned) text vector, f_i its standardised numeric signals (log price, log
training sales, mean training rating; unknown -> the catalog mean), `A` an optional residual linear
adaptor on the text vector (the light adaptor over frozen embeddings that UniSRec trains in seconds on a
CPU) and `MLP` a one-hidden-layer projection of the features. Both output layers start at zero, so
training starts from the text vectors exactly, and the step-0 vectors stay a candidate: like
fine-tuning, fusion is kept only when it beats them on validation.

Training uses the fine-tuning objective (symmetric in-batch softmax with the logQ correction) on the
same co-interaction pairs, but over cached vectors, so a step costs a matrix product, not a
transformer pass: 600 steps with batches of 1,024 take well under a minute on 2 cores.

Items with no history have 0 sales. Every training item has some, so a projection that reads sales
would meet "0" for the first time on new items; `new_item_dropout` shows a share of the training
items to the projection as new (sales at the 0-sales value) so it learns what that means.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.data import schema as S
from recsys.config import FusionConfig
from recsys.model.finetune import in_batch_softmax_loss, positive_log_frequency
from recsys.data.signals import SignalScaler
from recsys.data.splits import Split

log = logging.getLogger(__name__)

WEIGHTS_FILE = "fusion.pt"
META_FILE = "fusion.json"


class FusionAdaptor(torch.nn.Module):
    """v + A v + MLP(f), L2-normalised; A and the MLP's output layer start at zero (identity at step 0)."""

    def __init__(self, dim: int, n_features: int, hidden: int, text_adaptor: bool):
        super().__init__()
        self.dim, self.n_features, self.hidden = dim, n_features, hidden
        self.text = torch.nn.Linear(dim, dim, bias=False) if text_adaptor else None
        self.features = (
            torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim)) if n_features else None
        )
        if self.text is not None:
            torch.nn.init.zeros_(self.text.weight)
        if self.features is not None:
            torch.nn.init.zeros_(self.features[2].weight)
            torch.nn.init.zeros_(self.features[2].bias)

    def forward(self, vectors: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        out = vectors
        if self.text is not None:
            out = out + self.text(vectors)
        if self.features is not None and features is not None:
            out = out + self.features(features)
        return torch.nn.functional.normalize(out, dim=-1)

    @torch.inference_mode()
    def apply(self, vectors: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        """Fused unit vectors for a batch of items (numpy in, numpy out)."""
        self.eval()
        f = torch.as_tensor(features, dtype=torch.float32) if features is not None and self.features is not None else None
        return self(torch.as_tensor(vectors, dtype=torch.float32), f).numpy()


@dataclass
class FusionResult:
    adaptor: FusionAdaptor
    losses: list[float] = field(default_factory=list)
    val_history: dict[int, float] = field(default_factory=dict)  # step -> validation score (step 0 = text vectors)
    best_step: int = 0  # 0: fusion did not beat the text vectors; they are used as they are
    seconds: float = 0.0

    @property
    def kept(self) -> bool:
        return self.best_step > 0


def train_fusion(
    vectors: np.ndarray,
    features: np.ndarray | None,
    pairs: np.ndarray,
    config: FusionConfig,
    validate: Callable[[np.ndarray], float] | None = None,
    new_item_sales: tuple[int, float] | None = None,
) -> FusionResult:
    """Train the adaptor on co-interaction pairs over fixed item vectors.

    Args:
        vectors: [n_items, d] unit text vectors.
        features: [n_items, n_features] standardised signals, or None (text adaptor only).
        pairs: [n_pairs, 2] item-index pairs (`recsys.model.finetune.training_pairs`).
        config: settings.
        validate: scores fused vectors on validation (higher is better); the step-0 vectors (the text
            vectors themselves) are scored first and stay a candidate. Without it the last step is kept.
        new_item_sales: (column, value) of the sales input of an item with no sales
            (`SignalScaler.new_item_sales`); `config.new_item_dropout` of each batch's items get it.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_features = 0 if features is None else features.shape[1]
    adaptor = FusionAdaptor(vectors.shape[1], n_features, config.hidden, config.text_adaptor)
    result = FusionResult(adaptor)
    v = torch.as_tensor(vectors, dtype=torch.float32)
    f = torch.as_tensor(features, dtype=torch.float32) if features is not None else None
    best_state = copy.deepcopy(adaptor.state_dict())
    if validate is not None:
        best = result.val_history[0] = validate(vectors)
    if len(pairs) < 2 or (adaptor.text is None and adaptor.features is None):
        result.seconds = time.perf_counter() - start
        return result
    # only the sales input changes: a new item's price and rating are as known as anyone's
    sales = new_item_sales if f is not None and config.new_item_dropout > 0 else None
    log_q = torch.as_tensor(positive_log_frequency(pairs, len(vectors)))
    opt = torch.optim.AdamW(adaptor.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(pairs))
    per_epoch = len(pairs) // batch
    order = rng.permutation(len(pairs))
    stale = 0
    adaptor.train()
    for step in tqdm(range(1, config.steps + 1), desc="fusion", unit="step", mininterval=2):
        pos = (step - 1) % per_epoch
        if pos == 0 and step > 1:
            order = rng.permutation(len(pairs))
        chunk = torch.as_tensor(pairs[order[pos * batch : (pos + 1) * batch]])
        a_ids, b_ids = chunk[:, 0], chunk[:, 1]
        fa = fb = None
        if f is not None:
            fa, fb = f[a_ids].clone(), f[b_ids].clone()
            if sales is not None:
                for part in (fa, fb):
                    drop = torch.as_tensor(rng.random(len(part)) < config.new_item_dropout)
                    part[drop, sales[0]] = sales[1]
        a, b = adaptor(v[a_ids], fa), adaptor(v[b_ids], fb)
        loss = in_batch_softmax_loss(a, b, a_ids, b_ids, config.temperature, log_q=log_q)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
        if validate is not None and (step % config.eval_every == 0 or step == config.steps):
            score = result.val_history[step] = validate(adaptor.apply(vectors, features))
            adaptor.train()
            if score > best:
                best, result.best_step, stale = score, step, 0
                best_state = copy.deepcopy(adaptor.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    log.info("fusion: early stop at step %d (best %.4f at step %d)", step, best, result.best_step)
                    break
    if validate is None:
        result.best_step = len(result.losses)
        best_state = adaptor.state_dict()
    adaptor.load_state_dict(best_state)
    adaptor.eval()
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class FusedEncoder:
    """What serving needs to put a new item's text vector in the fused space."""

    adaptor: FusionAdaptor
    scaler: SignalScaler | None

    def fuse_new(self, vectors: np.ndarray) -> np.ndarray:
        """Fused vectors of items known only by their text (new items, free-text requests)."""
        feats = None
        if self.scaler is not None and self.adaptor.features is not None:
            feats = np.repeat(self.scaler.unknown_item()[None, :], len(vectors), axis=0)
        return self.adaptor.apply(vectors, feats)

    def save(self, model_dir: Path, extra: dict | None = None) -> Path:
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.adaptor.state_dict(), model_dir / WEIGHTS_FILE)
        meta = {
            "dim": self.adaptor.dim,
            "n_features": self.adaptor.n_features,
            "hidden": self.adaptor.hidden,
            "text_adaptor": self.adaptor.text is not None,
            "scaler": asdict(self.scaler) if self.scaler is not None else None,
        } | (extra or {})
        (model_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        return model_dir / META_FILE

    @classmethod
    def load(cls, model_dir: str | Path) -> "FusedEncoder":
        root = Path(model_dir)
        meta = json.loads((root / META_FILE).read_text())
        adaptor = FusionAdaptor(meta["dim"], meta["n_features"], meta["hidden"], meta["text_adaptor"])
        adaptor.load_state_dict(torch.load(root / WEIGHTS_FILE, weights_only=True))
        adaptor.eval()
        s = meta.get("scaler")
        scaler = SignalScaler(tuple(s["names"]), tuple(s["mean"]), tuple(s["std"])) if s else None
        return cls(adaptor, scaler)


def train_run_fusion(
    fusion: FusionConfig, pairs: np.ndarray, split: Split, catalog: pd.DataFrame, vectors: np.ndarray, signals: dict, k: int, select_on: str = "pseudo_cold"
) -> tuple[FusionResult, SignalScaler | None, np.ndarray | None, np.ndarray]:
    """Train the fusion adaptor on a run's split, judging each step as `select_on` says.

    "pseudo_cold": fusion is there for the items behaviour cannot reach. A projection that sharpens warm
    items but misplaces new ones is worse for the hybrid, whose EASE part already knows the warm items
    (measured on online-retail, scripts/bench_fusion.py: sales fused in and judged on plain validation
    lift the text model's Recall@10 +57% but halve its cold-slice recall). So the split's tuning fold
    (`Split.tuning_items`: warm items kept out of the fine-tuning pairs too) is held out of the training
    pairs and shown to the projection as new (0 sales), and a step is scored by validation Recall@k on
    those items. "validation": plain validation Recall@k
    (the text model served alone). Either way the text vectors (step 0) stay a candidate.

    `pairs` are the fine-tuning pairs (`recsys.model.finetune.training_pairs`). Returns (FusionResult,
    SignalScaler or None, features or None, held-out item indices).
    """
    from recsys.evaluation.evaluate import evaluate_scorers, vector_scorer
    from recsys.evaluation.metrics import metric_name
    from recsys.data.signals import available_signals
    from recsys.data.splits import tuning_fold

    if select_on not in ("pseudo_cold", "validation"):
        raise ValueError(f"select_on must be pseudo_cold or validation, got {select_on!r}")
    item_ids = catalog[S.ITEM_ID].tolist()
    raw = available_signals(signals, fusion.signals)
    scaler = SignalScaler.fit(raw) if raw else None
    features = scaler.transform(raw) if scaler is not None else None
    hidden = np.zeros(0, dtype=np.int64)
    fold_features = features
    metric = metric_name("recall", k)
    if select_on == "pseudo_cold":
        metric = metric_name("cold_recall", k)
        hidden = tuning_fold(split, catalog)
        pairs = pairs[~np.isin(pairs, hidden).any(axis=1)]
        if scaler is not None and scaler.new_item_sales() is not None:
            col, unsold = scaler.new_item_sales()
            fold_features = features.copy()
            fold_features[hidden, col] = unsold  # held-out items look new to the projection, as real new items will

    def validate(v: np.ndarray) -> float:
        return evaluate_scorers(item_ids, {"m": vector_scorer(v)}, split, "val", k, extra_cold=hidden)["m"][metric]

    # validate() sees the vectors fused with the fold's features (the held-out items as new)
    result = train_fusion(vectors, fold_features, pairs, fusion, validate, scaler.new_item_sales() if scaler is not None else None)
    return result, scaler, features, hidden
