"""Fine-tuning the encoder on behaviour: in-batch softmax over co-interaction pairs.

A pair is two items of the same user's training basket. For a batch of pairs (a_i, b_i), the
loss is the cross-entropy of picking b_i for a_i among every b_j in the batch (and symmetrically),
i.e. the likelihood of the observed co-item, with every other item in the batch as a negative.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys import schema as S
from recsys.config import TrainConfig
from recsys.encoder import TextEncoder

log = logging.getLogger(__name__)


def co_interaction_pairs(train_pairs: pd.DataFrame, item_index: dict[str, int], config: TrainConfig) -> np.ndarray:
    """Sample (anchor, positive) item-index pairs from each user's training items.

    Returns an int array [n_pairs, 2], shuffled with the config's seed.
    """
    rng = np.random.default_rng(config.seed)
    out: list[np.ndarray] = []
    grouped = train_pairs.groupby(S.USER_ID, sort=True)[S.ITEM_ID].agg(list)
    for items in grouped:
        idx = np.array([item_index[i] for i in items if i in item_index])
        if len(idx) < 2:
            continue
        n = min(config.max_pairs_per_user, len(idx) * (len(idx) - 1) // 2)
        a = rng.integers(0, len(idx), size=n * 2)
        b = rng.integers(0, len(idx), size=n * 2)
        keep = a != b
        out.append(np.stack([idx[a[keep]][:n], idx[b[keep]][:n]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(out)
    return pairs[rng.permutation(len(pairs))]


def in_batch_softmax_loss(a: torch.Tensor, b: torch.Tensor, a_ids: torch.Tensor, b_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch softmax (InfoNCE) loss.

    Other pairs that contain the same item as the positive would be false negatives, so their
    logits are masked out.

    Example:
        >>> a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = in_batch_softmax_loss(a, a, torch.arange(4), torch.arange(4), 0.05)
    """
    logits = a @ b.T / temperature
    same = (b_ids.unsqueeze(0) == b_ids.unsqueeze(1)) | (a_ids.unsqueeze(1) == b_ids.unsqueeze(0))
    eye = torch.eye(len(a_ids), dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a_ids), device=a.device)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))  # cosine decay

    return fn


def finetune_encoder(
    encoder: TextEncoder,
    documents: list[str],
    pairs: np.ndarray,
    config: TrainConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune `encoder` in place on co-interaction pairs for at most `config.max_steps` steps.

    Args:
        encoder: the encoder to train (its weights change).
        documents: item documents, indexed by item index.
        pairs: [n, 2] item-index pairs from `co_interaction_pairs`.
        config: optimisation settings.
        on_step: called with (step, loss) after every step, e.g. to log to MLflow.

    Returns:
        The loss of every step.
    """
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    n_batches = len(pairs) // config.batch_size
    total = min(config.max_steps, n_batches)
    if total == 0:
        log.warning("no full batch of pairs (%d pairs, batch %d): encoder left as it was", len(pairs), config.batch_size)
        return []
    opt = torch.optim.AdamW(encoder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, total))
    encoder.model.train()
    use_amp = encoder.device.type == "cuda"
    losses: list[float] = []
    for step in tqdm(range(total), desc="fine-tuning", unit="step"):
        batch = torch.as_tensor(pairs[step * config.batch_size : (step + 1) * config.batch_size], device=encoder.device)
        a_ids, b_ids = batch[:, 0], batch[:, 1]
        with torch.autocast(device_type=encoder.device.type, dtype=torch.bfloat16, enabled=use_amp):
            a = encoder([documents[i] for i in a_ids.tolist()])
            b = encoder([documents[i] for i in b_ids.tolist()])
            loss = in_batch_softmax_loss(a.float(), b.float(), a_ids, b_ids, config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
    encoder.model.eval()
    return losses
