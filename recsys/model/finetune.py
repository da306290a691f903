"""Fine-tuning the encoder on behaviour: in-batch softmax over co-interaction pairs.

A pair is two items of the same user's training basket. For a batch of pairs (a_i, b_i), the
loss is the cross-entropy of picking b_i for a_i among every b_j in the batch (and symmetrically),
i.e. the likelihood of the observed co-item, with every other item in the batch as a negative.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.data import schema as S
from recsys.config import TrainConfig
from recsys.model.encoder import TextEncoder

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


def cooccurrence_pairs(train_pairs: pd.DataFrame, item_index: dict[str, int], config: TrainConfig) -> np.ndarray:
    """(anchor, positive) pairs from item co-occurrence: each item with its strongest co-items.

    Two random items of a basket are often unrelated (a median online-retail customer bought 35
    items), and training on such pairs teaches the encoder to make every item look alike. Here an
    item's positives are its `neighbours_per_item` co-items with the highest co-occurrence cosine
    count(i, j) / sqrt(count(i) * count(j)), among those bought together by at least
    `min_cooccurrence` users. Returns an int array [n_pairs, 2], shuffled with the config's seed.
    """
    import scipy.sparse as sp

    known = train_pairs[train_pairs[S.ITEM_ID].isin(item_index)]
    users = pd.factorize(known[S.USER_ID])[0]
    items = known[S.ITEM_ID].map(item_index).to_numpy()
    if len(items) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(users.max() + 1, len(item_index)))
    x.data[:] = 1.0  # a user buying an item twice is still one co-occurrence
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    counts = np.asarray(x.sum(axis=0)).ravel()
    out: list[np.ndarray] = []
    for i in range(co.shape[0]):
        js = co.indices[co.indptr[i] : co.indptr[i + 1]]
        cs = co.data[co.indptr[i] : co.indptr[i + 1]]
        keep = cs >= config.min_cooccurrence
        js, cs = js[keep], cs[keep]
        if len(js) == 0:
            continue
        score = cs / np.sqrt(counts[i] * counts[js])
        top = js[np.lexsort((js, -score))[: config.neighbours_per_item]]  # ties broken by index: deterministic
        out.append(np.stack([np.full(len(top), i), top], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[np.random.default_rng(config.seed).permutation(len(pairs))]


def sequential_pairs(train_pairs: pd.DataFrame, item_index: dict[str, int]) -> np.ndarray:
    """(item, next item) pairs of each user's time-ordered history (empty without timestamps)."""
    if S.TIMESTAMP not in train_pairs or train_pairs[S.TIMESTAMP].isna().all():
        return np.zeros((0, 2), dtype=np.int64)
    known = train_pairs[train_pairs[S.ITEM_ID].isin(item_index)].dropna(subset=[S.TIMESTAMP])
    ordered = known.sort_values([S.USER_ID, S.TIMESTAMP, S.ITEM_ID], kind="stable")
    idx = ordered[S.ITEM_ID].map(item_index).to_numpy()
    same_user = ordered[S.USER_ID].to_numpy()[1:] == ordered[S.USER_ID].to_numpy()[:-1]
    pairs = np.stack([idx[:-1][same_user], idx[1:][same_user]], axis=1).astype(np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def training_pairs(train_pairs: pd.DataFrame, item_index: dict[str, int], config: TrainConfig) -> np.ndarray:
    """The configured pair strategy — "cooccurrence" (default) or "random" basket pairs — plus, where
    the data has time, consecutive items of each user's history. Shuffled with the config's seed."""
    if config.pair_strategy == "random":
        pairs = co_interaction_pairs(train_pairs, item_index, config)
    elif config.pair_strategy == "cooccurrence":
        pairs = cooccurrence_pairs(train_pairs, item_index, config)
    else:
        raise ValueError(f"unknown pair_strategy {config.pair_strategy!r} (use 'cooccurrence' or 'random')")
    seq = sequential_pairs(train_pairs, item_index)
    if len(seq) == 0:
        return pairs
    both = np.concatenate([pairs, seq])
    return both[np.random.default_rng(config.seed).permutation(len(both))]


def positive_log_frequency(pairs: np.ndarray, n_items: int) -> np.ndarray:
    """log of each item's share among the positives (the logQ correction of sampled softmax)."""
    counts = np.bincount(pairs[:, 1], minlength=n_items).astype(np.float64) + 1.0  # +1: items never a positive
    return np.log(counts / counts.sum()).astype(np.float32)


class AdditiveHead(torch.nn.Module):
    """s(a, b) = w' sigmoid(a + b): the original design's scoring head, for comparison with the dot product."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(dim) / dim**0.5)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(a.unsqueeze(1) + b.unsqueeze(0)) @ self.w  # [n_a, n_b]


def in_batch_softmax_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    a_ids: torch.Tensor,
    b_ids: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
    head: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Symmetric in-batch softmax (InfoNCE) loss.

    Other pairs that contain the same item as the positive would be false negatives, so their
    logits are masked out.

    Example:
        >>> a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
        >>> loss = in_batch_softmax_loss(a, a, torch.arange(4), torch.arange(4), 0.05)
    """
    logits = (head(a, b) if head is not None else a @ b.T) / temperature
    if log_q is not None:
        # logQ correction (Yi et al. 2019): an item is a negative in proportion to how often it is a
        # positive, so without it popular items are pushed away from everything
        logits = logits - log_q[b_ids].unsqueeze(0)
    # the same mask serves both directions (a->b and, transposed, b->a), so it covers repeated
    # positives, repeated anchors, and an anchor that is another pair's positive
    same = (
        (b_ids.unsqueeze(0) == b_ids.unsqueeze(1))
        | (a_ids.unsqueeze(0) == a_ids.unsqueeze(1))
        | (a_ids.unsqueeze(1) == b_ids.unsqueeze(0))
    )
    eye = torch.eye(len(a_ids), dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a_ids), device=a.device)
    # the likelihood of the observed co-item (not the max probability over items, which any model
    # satisfies by being confident about some item)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))  # cosine decay

    return fn


def freeze_lower_layers(encoder: TextEncoder, n_layers: int) -> int:
    """Freeze the embeddings and the lowest `n_layers` transformer layers; returns the frozen parameter count."""
    if n_layers <= 0:
        return 0
    frozen = 0
    for name, param in encoder.model.named_parameters():
        layer = re.search(r"layer\.(\d+)\.", name)
        if name.startswith("embeddings.") or (layer is not None and int(layer.group(1)) < n_layers):
            param.requires_grad_(False)
            frozen += param.numel()
    log.info("froze %d parameters (embeddings + %d lowest layers)", frozen, n_layers)
    return frozen


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    val_history: dict[int, float] = field(default_factory=dict)  # step -> validation score
    best_step: int = 0  # 0 = the encoder as it was given (fine-tuning did not beat it)
    best_score: float | None = None


def finetune_encoder(
    encoder: TextEncoder,
    documents: list[str],
    pairs: np.ndarray,
    config: TrainConfig,
    on_step: Callable[[int, float], None] | None = None,
    validate: Callable[[TextEncoder], float] | None = None,
) -> TrainResult:
    """Fine-tune `encoder` in place on co-interaction pairs for at most `config.max_steps` steps.

    With `validate` (higher is better, e.g. validation Recall@10), the encoder is scored before
    training and every `config.eval_every` steps; training stops after `config.patience` scores
    without improvement, and the best weights are restored at the end. The starting encoder is a
    candidate too, so fine-tuning never returns an encoder worse on validation than it was given.

    Args:
        encoder: the encoder to train (its weights change).
        documents: item documents, indexed by item index.
        pairs: [n, 2] item-index pairs from `training_pairs`.
        config: optimisation settings.
        on_step: called with (step, loss) after every step, e.g. to log to MLflow.
        validate: scores the current encoder on validation data.

    Returns:
        Losses, the validation history and which step's weights the encoder now holds.
    """
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    result = TrainResult()
    per_epoch = len(pairs) // config.batch_size
    total = min(config.max_steps, per_epoch * max(config.epochs, 1))
    if validate is not None:
        result.best_score = result.val_history[0] = validate(encoder)
    if total == 0:
        log.warning("no training step to run (%d pairs, batch %d, max_steps %d)", len(pairs), config.batch_size, config.max_steps)
        return result
    best_state = copy.deepcopy(encoder.model.state_dict()) if validate is not None else None
    freeze_lower_layers(encoder, config.freeze_layers)
    head = AdditiveHead(encoder.dim).to(encoder.device) if config.head == "additive" else None
    if config.head not in ("dot", "additive"):
        raise ValueError(f"unknown head {config.head!r} (use 'dot' or 'additive')")
    log_q = torch.as_tensor(positive_log_frequency(pairs, len(documents)), device=encoder.device) if config.logq_correction else None
    params = [p for p in encoder.parameters() if p.requires_grad] + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config, total))
    encoder.model.train()
    use_amp = encoder.device.type == "cuda"
    stale = 0
    for step in tqdm(range(1, total + 1), desc="fine-tuning", unit="step"):
        epoch, pos = divmod(step - 1, per_epoch)
        if pos == 0 and epoch > 0:  # a new pass over the pairs, in a new (seeded) order
            order = np.random.default_rng(config.seed + epoch).permutation(len(pairs))
        elif step == 1:
            order = np.arange(len(pairs))
        batch = torch.as_tensor(pairs[order[pos * config.batch_size : (pos + 1) * config.batch_size]], device=encoder.device)
        a_ids, b_ids = batch[:, 0], batch[:, 1]
        with torch.autocast(device_type=encoder.device.type, dtype=torch.bfloat16, enabled=use_amp):
            a = encoder([documents[i] for i in a_ids.tolist()])
            b = encoder([documents[i] for i in b_ids.tolist()])
        loss = in_batch_softmax_loss(a.float(), b.float(), a_ids, b_ids, config.temperature, log_q=log_q, head=head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        sched.step()
        result.losses.append(float(loss.detach()))
        if on_step:
            on_step(step, result.losses[-1])
        if validate is not None and (step % config.eval_every == 0 or step == total):
            score = result.val_history[step] = validate(encoder)
            encoder.model.train()
            log.info("step %d: validation score %.4f (best %.4f at step %d)", step, score, result.best_score, result.best_step)
            if score > result.best_score:
                result.best_score, result.best_step, stale = score, step, 0
                best_state = copy.deepcopy(encoder.model.state_dict())
            else:
                stale += 1
                if stale >= config.patience:
                    log.info("early stop at step %d: no improvement in %d validations", step, stale)
                    break
    if best_state is not None:
        encoder.model.load_state_dict(best_state)
    else:
        result.best_step = len(result.losses)
    encoder.model.eval()
    return result
