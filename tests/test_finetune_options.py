"""Training options: sequential pairs, the logQ correction, the additive head, frozen lower layers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import EncoderConfig, TrainConfig
from recsys.model.encoder import TextEncoder
from recsys.model.finetune import (
    AdditiveHead,
    finetune_encoder,
    freeze_lower_layers,
    in_batch_softmax_loss,
    positive_log_frequency,
    sequential_pairs,
    training_pairs,
)


def test_sequential_pairs_follow_each_users_time_order():
    ts = pd.to_datetime(["2020-01-03", "2020-01-01", "2020-01-02", "2020-01-01", "2020-01-05"], utc=True)
    train = pd.DataFrame({"user_id": ["u1", "u1", "u1", "u2", "u2"], "item_id": ["c", "a", "b", "b", "a"], "timestamp": ts})
    index = {"a": 0, "b": 1, "c": 2}
    # u1 in time: a, b, c -> (a,b), (b,c); u2: b, a -> (b,a); never across users
    assert sequential_pairs(train, index).tolist() == [[0, 1], [1, 2], [1, 0]]


def test_no_sequential_pairs_without_time():
    train = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"]})
    assert sequential_pairs(train, {"a": 0, "b": 1}).shape == (0, 2)


def test_training_pairs_add_sequential_pairs_where_there_is_time():
    ts = pd.to_datetime(["2020-01-01", "2020-01-02"], utc=True)
    train = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": ts})
    cfg = TrainConfig(min_cooccurrence=1)
    pairs = training_pairs(train, {"a": 0, "b": 1}, cfg)
    # co-occurrence gives (a,b) and (b,a); the history adds (a,b) once more
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 1), (1, 0)]


def test_positive_log_frequency():
    pairs = np.array([[0, 1], [2, 1], [0, 2]])
    # positives: item1 x2, item2 x1, item0 x0; +1 smoothing -> counts 1, 3, 2 of 6
    np.testing.assert_allclose(positive_log_frequency(pairs, 3), np.log([1 / 6, 3 / 6, 2 / 6]), rtol=1e-6)


def test_logq_correction_shifts_each_column_by_its_log_frequency():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    ids = torch.tensor([0, 1])
    log_q = torch.tensor([math.log(0.9), math.log(0.1)])
    got = in_batch_softmax_loss(a, a, ids, ids, 1.0, log_q=log_q)
    # logits = [[1, 0], [0, 1]] - log_q[col]: row0 = [1 - ln.9, -ln.1], row1 = [-ln.9, 1 - ln.1]
    logits = torch.tensor([[1 - math.log(0.9), -math.log(0.1)], [-math.log(0.9), 1 - math.log(0.1)]])
    target = torch.arange(2)
    want = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
    assert got.item() == pytest.approx(want.item(), abs=1e-6)


def test_additive_head_is_w_dot_sigmoid_of_the_sum():
    head = AdditiveHead(2)
    with torch.no_grad():
        head.w.copy_(torch.tensor([1.0, -1.0]))
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    s = 1 / (1 + math.exp(-1))
    t = 1 / (1 + math.exp(-2))
    # pairs: (a, b0) -> sigmoid([1, 0]) . w = s - 0.5 ; (a, b1) -> sigmoid([0, 2]) . w = 0.5 - t
    np.testing.assert_allclose(head(a, b).detach().numpy(), [[s - 0.5, 0.5 - t]], atol=1e-6)


@pytest.fixture(scope="module")
def encoder():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TextEncoder(config=EncoderConfig(max_length=16, device="cpu"))
    torch.set_num_threads(threads)


def test_freeze_lower_layers(encoder):
    frozen = freeze_lower_layers(encoder, 2)
    names = {n for n, p in encoder.model.named_parameters() if not p.requires_grad}
    assert frozen == sum(p.numel() for p in encoder.model.parameters() if not p.requires_grad) > 0
    assert any(n.startswith("embeddings.") for n in names)
    assert any("layer.1." in n for n in names) and not any("layer.2." in n for n in names)
    for p in encoder.model.parameters():
        p.requires_grad_(True)


def test_additive_head_trains_and_leaves_frozen_layers_untouched(encoder):
    docs = ["red mug", "blue mug", "green plate", "white plate", "steel knife", "wooden spoon"]
    pairs = np.array([[0, 1], [2, 3], [4, 5], [1, 0], [3, 2], [5, 4], [0, 1], [2, 3]])
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    cfg = TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, head="additive", freeze_layers=6, learning_rate=1e-3)
    result = finetune_encoder(encoder, docs, pairs, cfg)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    after = dict(encoder.model.named_parameters())
    # embeddings and all 6 layers frozen: only the pooler (unused by mean pooling) could move
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith(("embeddings.", "encoder.layer.")))
    for p in encoder.model.parameters():
        p.requires_grad_(True)
