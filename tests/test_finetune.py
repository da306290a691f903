"""Tests of recsys.model.finetune: co-interaction pairs, the in-batch softmax loss, and a few real fine-tuning steps
of the packaged all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data import schema as S
from recsys.config import EncoderConfig, TrainConfig
from recsys.model.finetune import (
    co_interaction_pairs,
    cooccurrence_pairs,
    finetune_encoder,
    in_batch_softmax_loss,
    training_pairs,
)

# --- co_interaction_pairs ------------------------------------------------------------------------------
# three users with disjoint baskets, so every pair can be traced back to its user
BASKETS = {
    "u1": ["a", "b", "c", "d", "e", "f"],  # 6 items: C(6, 2) = 15 possible pairs
    "u2": ["g", "h"],  # 2 items: 1 possible pair
    "u3": ["i", "x"],  # "x" is not in the index -> only 1 usable item -> no pair
}
INDEX = {item: n for n, item in enumerate("abcdefghi")}


def _train_pairs() -> pd.DataFrame:
    rows = [(u, i) for u, items in BASKETS.items() for i in items]
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID])


def _owner(pair: np.ndarray) -> str:
    names = {v: k for k, v in INDEX.items()}
    owners = {u for u, items in BASKETS.items() if names[int(pair[0])] in items and names[int(pair[1])] in items}
    assert len(owners) == 1, f"pair {pair} is not from one user's basket"
    return owners.pop()


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_pairs_are_from_one_basket_and_never_self(seed):
    pairs = co_interaction_pairs(_train_pairs(), INDEX, TrainConfig(seed=seed, max_pairs_per_user=50))
    assert pairs.ndim == 2 and pairs.shape[1] == 2 and len(pairs) > 0
    assert np.issubdtype(pairs.dtype, np.integer)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    owners = [_owner(p) for p in pairs]
    # u3 has one indexed item only: no pair; "x" (not in the index) never appears
    assert "u3" not in owners
    assert set(pairs.ravel().tolist()) <= set(INDEX.values()) - {INDEX["i"]}
    # at most min(max_pairs_per_user, C(n, 2)) pairs per user: u1 <= 15, u2 <= 1
    assert owners.count("u1") <= 15
    assert owners.count("u2") <= 1


@pytest.mark.parametrize("cap", [1, 3, 5])
def test_pairs_respect_max_pairs_per_user(cap):
    pairs = co_interaction_pairs(_train_pairs(), INDEX, TrainConfig(seed=0, max_pairs_per_user=cap))
    owners = [_owner(p) for p in pairs]
    assert 1 <= owners.count("u1") <= cap
    assert owners.count("u2") <= 1


def test_pairs_are_seeded():
    a = co_interaction_pairs(_train_pairs(), INDEX, TrainConfig(seed=5))
    b = co_interaction_pairs(_train_pairs(), INDEX, TrainConfig(seed=5))
    c = co_interaction_pairs(_train_pairs(), INDEX, TrainConfig(seed=6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_no_pairs_gives_an_empty_int_array():
    one_item_each = pd.DataFrame({S.USER_ID: ["u1", "u2"], S.ITEM_ID: ["a", "b"]})
    pairs = co_interaction_pairs(one_item_each, INDEX, TrainConfig())
    assert pairs.shape == (0, 2)
    assert np.issubdtype(pairs.dtype, np.integer)


# --- cooccurrence_pairs ---------------------------------------------------------------------------------------
# u1: a b c; u2: a b; u3: a b c (a bought twice); u4: a d; "x" is not in the index
# item counts (users): a 4, b 3, c 2, d 1
# co-occurrence (users who bought both): a-b 3, a-c 2, b-c 2, a-d 1
# cosine count(i, j) / sqrt(count(i) count(j)): a-b 3/sqrt(12) = .866, a-c 2/sqrt(8) = .707, b-c 2/sqrt(6) = .816
CO_INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}


def _co_train() -> pd.DataFrame:
    rows = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "a"), ("u3", "b")]
    rows += [("u3", "c"), ("u4", "a"), ("u4", "d"), ("u4", "x")]
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID])


def _as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(x), int(y)) for x, y in pairs}


def test_cooccurrence_pairs_top_neighbour():
    cfg = TrainConfig(min_cooccurrence=2, neighbours_per_item=1)
    pairs = cooccurrence_pairs(_co_train(), CO_INDEX, cfg)
    # a's best co-item: b (.866 > .707); b's: a (.866 > .816); c's: b (.816 > .707); d: a-d = 1 user < 2 -> none
    assert _as_set(pairs) == {(0, 1), (1, 0), (2, 1)}
    assert len(pairs) == 3 and pairs.dtype == np.int64


def test_cooccurrence_pairs_min_count_and_neighbours():
    # two neighbours each, at least 2 users: every pair among a, b, c both ways; d never (a-d: 1 user)
    pairs = cooccurrence_pairs(_co_train(), CO_INDEX, TrainConfig(min_cooccurrence=2, neighbours_per_item=2))
    assert _as_set(pairs) == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}
    # at least 3 users: only a-b
    pairs = cooccurrence_pairs(_co_train(), CO_INDEX, TrainConfig(min_cooccurrence=3, neighbours_per_item=5))
    assert _as_set(pairs) == {(0, 1), (1, 0)}
    # at least 1 user: d appears with a (its only co-item)
    pairs = cooccurrence_pairs(_co_train(), CO_INDEX, TrainConfig(min_cooccurrence=1, neighbours_per_item=5))
    assert (3, 0) in _as_set(pairs) and (0, 3) in _as_set(pairs)
    assert (pairs[:, 0] != pairs[:, 1]).all()


def test_cooccurrence_pairs_are_seeded_and_empty_when_nothing_co_occurs():
    cfg = TrainConfig(min_cooccurrence=1, neighbours_per_item=5, seed=3)
    np.testing.assert_array_equal(cooccurrence_pairs(_co_train(), CO_INDEX, cfg), cooccurrence_pairs(_co_train(), CO_INDEX, cfg))
    lonely = pd.DataFrame({S.USER_ID: ["u1", "u2"], S.ITEM_ID: ["a", "b"]})
    assert cooccurrence_pairs(lonely, CO_INDEX, TrainConfig()).shape == (0, 2)
    nothing_known = pd.DataFrame({S.USER_ID: ["u1"], S.ITEM_ID: ["x"]})
    assert cooccurrence_pairs(nothing_known, CO_INDEX, TrainConfig()).shape == (0, 2)


def test_training_pairs_dispatches_on_the_strategy():
    random_cfg = TrainConfig(pair_strategy="random", seed=0)
    np.testing.assert_array_equal(
        training_pairs(_train_pairs(), INDEX, random_cfg), co_interaction_pairs(_train_pairs(), INDEX, random_cfg)
    )
    co_cfg = TrainConfig(pair_strategy="cooccurrence", min_cooccurrence=2, neighbours_per_item=1)
    np.testing.assert_array_equal(training_pairs(_co_train(), CO_INDEX, co_cfg), cooccurrence_pairs(_co_train(), CO_INDEX, co_cfg))
    assert TrainConfig().pair_strategy == "cooccurrence"
    with pytest.raises(ValueError, match="pair_strategy"):
        training_pairs(_co_train(), CO_INDEX, TrainConfig(pair_strategy="nope"))


# --- in_batch_softmax_loss ------------------------------------------------------------------------------


def _reference_loss(a: torch.Tensor, b: torch.Tensor, a_ids: list[int], b_ids: list[int], t: float) -> float:
    """The loss written out by hand, one softmax at a time.

    For anchor i (a_i choosing among the b's) the candidates are the positive b_i and every b_j of a pair j
    that is unrelated to pair i; a pair j is related (a false negative, left out) when it has the same
    anchor item (a_j == a_i), the same positive item (b_j == b_i), or its positive is i's anchor (b_j == a_i).
    The reverse direction (b_j choosing among the a's) leaves out the same related pairs.
    """
    n = len(a_ids)
    logits = (a @ b.T / t).double()

    def related(i: int, j: int) -> bool:
        return i != j and (a_ids[i] == a_ids[j] or b_ids[i] == b_ids[j] or a_ids[i] == b_ids[j])

    forward = [
        -logits[i, i] + torch.logsumexp(torch.stack([logits[i, j] for j in range(n) if not related(i, j)]), 0)
        for i in range(n)
    ]
    backward = [
        -logits[j, j] + torch.logsumexp(torch.stack([logits[i, j] for i in range(n) if not related(i, j)]), 0)
        for j in range(n)
    ]
    return float(0.5 * (torch.stack(forward).mean() + torch.stack(backward).mean()))


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=g), dim=-1)


def test_loss_of_orthonormal_pairs_is_zero():
    # a = b = I_4: logit_ii = 1/0.01 = 100, logit_ij = 0 -> each CE = log(1 + 3 e^-100) ~ 1e-43
    eye = torch.eye(4)
    loss = in_batch_softmax_loss(eye, eye, torch.arange(4), torch.arange(4), 0.01)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_loss_of_identical_vectors_is_log_n(n):
    # every logit equal -> softmax uniform over n candidates -> CE = log(n) both ways
    v = torch.nn.functional.normalize(torch.ones(n, 8), dim=-1)
    loss = in_batch_softmax_loss(v, v, torch.arange(n), torch.arange(n) + 100, 0.05)
    assert float(loss) == pytest.approx(math.log(n), abs=1e-5)


def test_duplicate_positive_is_masked_exact():
    # pairs (0, 3), (1, 3), (2, 4): pairs 0 and 1 share the positive item 3.
    # All logits equal: rows 0 and 1 choose among 2 candidates (the other pair's 3 is masked) -> log 2;
    # row 2 among all 3 -> log 3; same in the reverse direction -> loss = (2 log 2 + log 3) / 3 = 0.8283
    v = torch.nn.functional.normalize(torch.ones(3, 8), dim=-1)
    loss = in_batch_softmax_loss(v, v, torch.tensor([0, 1, 2]), torch.tensor([3, 3, 4]), 0.05)
    assert float(loss) == pytest.approx((2 * math.log(2) + math.log(3)) / 3, abs=1e-5)


def test_duplicate_positive_equals_the_loss_without_that_column():
    # random vectors, the positive item 3 twice (the second copy the same vector, as the same item embeds the same)
    a = _unit(4, 6, seed=1)
    b = _unit(4, 6, seed=2)
    b[1] = b[0]
    a_ids, b_ids = [0, 1, 2, 5], [3, 3, 4, 6]
    loss = in_batch_softmax_loss(a, b, torch.tensor(a_ids), torch.tensor(b_ids), 0.1)
    assert float(loss) == pytest.approx(_reference_loss(a, b, a_ids, b_ids, 0.1), abs=1e-5)
    # and it differs from the unmasked loss (the mask does something)
    unmasked = 0.5 * (
        torch.nn.functional.cross_entropy(a @ b.T / 0.1, torch.arange(4))
        + torch.nn.functional.cross_entropy(b @ a.T / 0.1, torch.arange(4))
    )
    assert abs(float(loss) - float(unmasked)) > 1e-3


def test_anchor_that_is_another_pairs_positive_is_masked():
    # pairs (1, 2) and (2, 1): the same co-interaction both ways round; for anchor 1 the other pair's b (= 1,
    # the anchor itself) is no negative
    a = _unit(3, 6, seed=3)
    b = _unit(3, 6, seed=4)
    b[1], a[1] = a[0], b[0]
    a_ids, b_ids = [1, 2, 7], [2, 1, 8]
    loss = in_batch_softmax_loss(a, b, torch.tensor(a_ids), torch.tensor(b_ids), 0.1)
    assert float(loss) == pytest.approx(_reference_loss(a, b, a_ids, b_ids, 0.1), abs=1e-5)


def test_duplicate_anchor_is_masked_like_a_duplicate_positive():
    # pairs (7, 3), (7, 4), (2, 5): pairs 0 and 1 share the anchor item 7. In the reverse direction the positive
    # of b_0 = 3 is item 7, and pair 1's a is that same item 7 -> a false negative, to be masked.
    # All logits equal -> as in test_duplicate_positive_is_masked_exact: (2 log 2 + log 3) / 3
    v = torch.nn.functional.normalize(torch.ones(3, 8), dim=-1)
    loss = in_batch_softmax_loss(v, v, torch.tensor([7, 7, 2]), torch.tensor([3, 4, 5]), 0.05)
    swapped = in_batch_softmax_loss(v, v, torch.tensor([3, 4, 5]), torch.tensor([7, 7, 2]), 0.05)
    assert float(loss) == pytest.approx(float(swapped), abs=1e-6)  # symmetric loss: swapping a and b changes nothing
    assert float(loss) == pytest.approx((2 * math.log(2) + math.log(3)) / 3, abs=1e-5)
    # random vectors: equal to the hand-written loss
    a, b = _unit(3, 6, seed=5), _unit(3, 6, seed=6)
    a[1] = a[0]
    got = in_batch_softmax_loss(a, b, torch.tensor([7, 7, 2]), torch.tensor([3, 4, 5]), 0.1)
    assert float(got) == pytest.approx(_reference_loss(a, b, [7, 7, 2], [3, 4, 5], 0.1), abs=1e-5)


def test_loss_has_gradients():
    a = _unit(3, 4, seed=7).requires_grad_(True)
    b = _unit(3, 4, seed=8).requires_grad_(True)
    loss = in_batch_softmax_loss(a, b, torch.arange(3), torch.arange(3) + 3, 0.05)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


# --- finetune_encoder with the real packaged encoder ------------------------------------------------------------
DOCS = [
    "Red ceramic coffee mug.",
    "Blue ceramic tea cup.",
    "Wooden toy train.",
    "Plastic toy car.",
    "White porcelain dinner plate.",
    "Steel kitchen knife.",
]
# 12 pairs = 3 full batches of 4
PAIRS = np.array([[0, 1], [2, 3], [4, 5], [1, 4], [3, 2], [5, 0], [0, 4], [1, 5], [2, 3], [0, 1], [4, 0], [3, 2]])
CONFIG = TrainConfig(max_steps=3, batch_size=4, learning_rate=1e-3, seed=11)


@pytest.fixture(scope="module")
def base_encoder():
    from recsys.model.encoder import TextEncoder

    # one torch thread: the steps are tiny, and 2 threads on a busy 2-core machine spin rather than work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    enc = TextEncoder(config=EncoderConfig(max_length=16, device="cpu"))
    yield enc
    torch.set_num_threads(threads)


def _weights(encoder) -> dict[str, torch.Tensor]:
    """A snapshot of the encoder's weights."""
    return {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}


@pytest.fixture(scope="module")
def two_runs(base_encoder):
    """Fine-tune two fresh copies of the encoder with the same config: (before, [(encoder, losses, steps)] * 2)."""
    before = _weights(base_encoder)
    runs = []
    for _ in range(2):
        enc = copy.deepcopy(base_encoder)
        seen: list[tuple[int, float]] = []
        result = finetune_encoder(enc, DOCS, PAIRS, CONFIG, on_step=lambda s, v, seen=seen: seen.append((s, v)))
        runs.append((enc, result, seen))
    return before, runs


def test_finetune_returns_one_finite_loss_per_step(two_runs):
    _, [(enc, result, seen), _] = two_runs
    losses = result.losses
    assert len(losses) == 3
    assert all(isinstance(x, float) and math.isfinite(x) and x >= 0 for x in losses)
    # on_step got (step, loss) after every step, steps counted from 1
    assert seen == list(enumerate(losses, start=1))
    # without validation the encoder holds the last step's weights and no score was taken
    assert result.best_step == 3
    assert result.val_history == {} and result.best_score is None
    # the encoder is left in eval mode
    assert not enc.model.training


def test_finetune_changes_the_weights(two_runs, base_encoder):
    before, [(enc, _, _), _] = two_runs
    after = _weights(enc)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no weight changed"
    # the original copy was not touched
    assert all(torch.equal(before[k], v) for k, v in _weights(base_encoder).items())


def test_finetune_is_reproducible(two_runs):
    _, [(enc1, result1, _), (enc2, result2, _)] = two_runs
    assert result1.losses == result2.losses
    w1, w2 = _weights(enc1), _weights(enc2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_zero_steps_leaves_the_encoder_as_it_was(base_encoder):
    enc = copy.deepcopy(base_encoder)
    before = _weights(enc)
    result = finetune_encoder(enc, DOCS, PAIRS, TrainConfig(max_steps=0, batch_size=4))
    assert result.losses == [] and result.best_step == 0
    assert all(torch.equal(before[k], v) for k, v in _weights(enc).items())


def test_fewer_pairs_than_a_batch_leaves_the_encoder_as_it_was(base_encoder):
    enc = copy.deepcopy(base_encoder)
    before = _weights(enc)
    assert finetune_encoder(enc, DOCS, PAIRS[:3], TrainConfig(max_steps=5, batch_size=4)).losses == []
    assert all(torch.equal(before[k], v) for k, v in _weights(enc).items())


class _Scores:
    """A validation function with scores fixed in advance; it keeps the weights it was shown."""

    def __init__(self, scores: list[float]):
        self.scores = list(scores)
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, encoder) -> float:
        self.seen.append(_weights(encoder))
        return self.scores[len(self.seen) - 1]


def test_validation_keeps_the_best_step(base_encoder):
    # scores: before training 0.1; after step 1: 0.5; step 2: 0.3; step 3: 0.2 (eval_every 1, patience 5)
    # -> best is step 1: the encoder ends with the weights it had after step 1
    enc = copy.deepcopy(base_encoder)
    validate = _Scores([0.1, 0.5, 0.3, 0.2])
    cfg = TrainConfig(max_steps=3, batch_size=4, learning_rate=1e-3, eval_every=1, patience=5, seed=11)
    result = finetune_encoder(enc, DOCS, PAIRS, cfg, validate=validate)
    assert len(result.losses) == 3
    assert result.val_history == {0: 0.1, 1: 0.5, 2: 0.3, 3: 0.2}
    assert result.best_step == 1 and result.best_score == 0.5
    final = _weights(enc)
    assert all(torch.equal(final[k], validate.seen[1][k]) for k in final)
    assert not all(torch.equal(final[k], validate.seen[3][k]) for k in final)
    assert not enc.model.training


def test_validation_stops_early_and_never_returns_a_worse_encoder(base_encoder):
    # scores: 0.5 before training, then 0.4 and 0.3: two validations without improvement = patience 2
    # -> stop after step 2 (of 3) and restore the starting weights (step 0)
    enc = copy.deepcopy(base_encoder)
    before = _weights(enc)
    validate = _Scores([0.5, 0.4, 0.3, 0.9])
    cfg = TrainConfig(max_steps=3, batch_size=4, learning_rate=1e-3, eval_every=1, patience=2, seed=11)
    result = finetune_encoder(enc, DOCS, PAIRS, cfg, validate=validate)
    assert len(result.losses) == 2
    assert result.val_history == {0: 0.5, 1: 0.4, 2: 0.3}
    assert result.best_step == 0 and result.best_score == 0.5
    assert all(torch.equal(before[k], v) for k, v in _weights(enc).items())


def test_epochs_repeat_the_pairs_in_a_new_seeded_order(base_encoder, monkeypatch):
    import recsys.model.finetune as ft

    seen: list[list[int]] = []
    original = ft.in_batch_softmax_loss

    def spy(a, b, a_ids, b_ids, *args, **kwargs):
        seen.append(sorted(zip(a_ids.tolist(), b_ids.tolist())))
        return original(a, b, a_ids, b_ids, *args, **kwargs)

    monkeypatch.setattr(ft, "in_batch_softmax_loss", spy)
    enc = copy.deepcopy(base_encoder)
    result = finetune_encoder(enc, DOCS, PAIRS, TrainConfig(max_steps=100, batch_size=4, epochs=2, learning_rate=1e-3, seed=5))
    assert len(result.losses) == 6  # 2 epochs x 3 full batches; max_steps does not bind
    first, second = seen[:3], seen[3:]
    as_pairs = lambda batches: sorted(p for batch in batches for p in batch)  # noqa: E731
    # each epoch covers every pair exactly once; the first in the given order, the second reshuffled
    assert as_pairs(first) == as_pairs(second) == sorted(map(tuple, PAIRS.tolist()))
    assert first == [sorted(map(tuple, PAIRS[i : i + 4].tolist())) for i in (0, 4, 8)]
    assert second != first
    # max_steps still caps the total
    assert len(finetune_encoder(copy.deepcopy(base_encoder), DOCS, PAIRS, TrainConfig(max_steps=4, batch_size=4, epochs=2)).losses) == 4


def test_gpu_recipe_applies_only_on_a_gpu_with_the_auto_profile():
    from recsys.config import GPU_RECIPE, PipelineConfig

    cfg = PipelineConfig.from_params({"max_train_steps": 60})
    assert cfg.train_for("cpu") == cfg.train
    gpu = cfg.train_for("cuda")
    assert (gpu.batch_size, gpu.learning_rate, gpu.max_steps, gpu.epochs) == (2048, 2e-4, 130, 10) == tuple(GPU_RECIPE[k] for k in ("batch_size", "learning_rate", "max_steps", "epochs"))
    assert PipelineConfig.from_params({"train_profile": "params"}).train_for("cuda").batch_size == 48
    assert PipelineConfig.from_params({"max_train_steps": 0}).train_for("cuda").max_steps == 0  # 0 = skip, on any device
    with pytest.raises(ValueError, match="train_profile"):
        PipelineConfig.from_params({"train_profile": "turbo"})
