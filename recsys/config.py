"""Typed configuration for a training run. Built without side effects: no env reads, no I/O.

`PipelineConfig.from_params` turns the DAG's trigger-form Params (a flat dict) into these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

# item documents (recsys.data.documents builds them): the parts a document may have
FIELDS = ("title", "description", "category", "tags", "price_band", "sales_band", "rating_band")
# The sales band is off by default: it writes "Sales: new" into every new item's text, which pulls new
# items towards each other and away from the items they belong with. Measured on online-retail (same
# split): with it the frozen encoder's cold-slice Recall@10 fell from 0.033 to 0.007 and the hybrid's
# from 0.046 to 0.032, for no gain overall (Recall@10 0.2090 -> 0.2089).
DEFAULT_TEMPLATE = ("title", "description", "category", "tags", "price_band", "rating_band")


@dataclass(frozen=True)
class DocumentConfig:
    template: tuple[str, ...] = DEFAULT_TEMPLATE  # which parts, in which order (any subset of FIELDS)
    bestseller_share: float = 0.10  # top share of items by sales called "bestseller"
    popular_share: float = 0.40  # the next share called "popular"
    rating_scale: float = 5.0  # ratings are mapped to a 0-5 scale for the bands

    def __post_init__(self) -> None:
        unknown = set(self.template) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown document fields {sorted(unknown)}; known: {FIELDS}")


def _iso_utc(name: str, text: str | None) -> datetime:
    """An ISO date or date-time (naive = UTC), or a ValueError naming the setting."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"{name} must be an ISO date such as 2017-11-01, got {text!r}") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 42  # the training seed: it never changes which part a pair falls in (the salt does)
    # keyed-hash salt of the stable split assignment; "" = the data set's stored salt (`recsys.data.splits.default_salt`
    # the first time). Changing it re-draws every part: do it on purpose only (the gate sees it in the lineage)
    salt: str = ""
    tuning_share: float = 0.10  # share of warm items in the tuning fold (pseudo-cold; out of fine-tuning pairs)
    min_items_per_user: int = 4  # users with fewer items carry too little signal to hold any out
    cold_item_share: float = 0.10  # share of items hidden from training to measure cold start
    holdout_share: float = 0.20  # share of each user's items held out as targets
    time_val_share: float = 0.10  # time split: the 10% of interactions before the test window
    time_test_share: float = 0.10  # time split: the last 10% of interactions
    # time split by calendar instead of shares: interactions from `time_val_start` (ISO date/time, UTC) are
    # validation, from `time_test_start` test (e.g. completejourney: months 1-10 train, 11 val, 12 test)
    time_val_start: str | None = None
    time_test_start: str | None = None
    # evaluate (tuning on validation, the test report, the gate's comparison) on at most this many users per
    # stage: the same seeded sample for every model (`Split.queries_and_targets`), named in the report; 0 = all.
    # Full ranking over the whole catalog stays: only the users are sampled
    max_eval_users: int = 0

    def __post_init__(self) -> None:
        if self.max_eval_users < 0:
            raise ValueError(f"max_eval_users must be >= 0 (0 = every user), got {self.max_eval_users}")
        if (self.time_val_start is None) != (self.time_test_start is None):
            raise ValueError("time_val_start and time_test_start are set together (or neither)")
        if self.time_val_start is not None and not _iso_utc("time_val_start", self.time_val_start) < _iso_utc("time_test_start", self.time_test_start):
            raise ValueError(f"time_val_start ({self.time_val_start}) must come before time_test_start ({self.time_test_start})")


@dataclass(frozen=True)
class EncoderConfig:
    model_path: str | None = None  # None -> the packaged all-MiniLM-L6-v2; any other HF encoder by local path
    max_length: int = 48  # product titles are short; longer documents are truncated
    batch_size: int = 128
    device: str = "auto"  # "auto" -> cuda when present, else cpu
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default
    # inference precision of `encode`: "auto" = bf16 autocast on CUDA and on CPUs with native bf16
    # (AVX512-BF16 / AMX: measured 1.6x the float32 speed, vectors within cosine 0.99998), else float32;
    # "float32" or "bfloat16" force it. Training stays float32 on the CPU.
    precision: str = "auto"


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 60  # bounded so the demo stays fast on 2 CPU cores
    batch_size: int = 48  # pairs per step; every other pair in the batch is a negative
    learning_rate: float = 5e-5  # measured on online-retail: 5e-5 beat the frozen encoder on validation in 60 steps, 2e-5 did not
    warmup_steps: int = 10
    weight_decay: float = 0.01
    temperature: float = 0.05
    grad_clip: float = 1.0
    max_pairs_per_user: int = 50  # "random" pairs: caps heavy buyers so they do not dominate
    pair_strategy: str = "cooccurrence"  # "cooccurrence" (strongest co-items) or "random" basket pairs
    neighbours_per_item: int = 10  # "cooccurrence": positives per anchor item
    min_cooccurrence: int = 3  # "cooccurrence": a pair needs this many users who bought both
    head: str = "dot"  # "dot": a.b ; "additive": w' sigmoid(a + b) (the original design's head)
    logq_correction: bool = True  # subtract log(frequency as a positive): popular items are not over-penalised as negatives
    freeze_layers: int = 0  # freeze the embeddings and the lowest N transformer layers (cheaper, for larger encoders)
    epochs: int = 1  # passes over the pairs (reshuffled each pass); max_steps caps the total
    eval_every: int = 30  # steps between validation scores (each re-embeds the validation candidates)
    # a validation ranks over at most this many items (every validation query and target kept, the rest a
    # seeded sample): each validation re-embeds them, which on a 1M-item catalog would take most of an hour
    # on 2 cores. 0 = the whole catalog. Below the cap nothing changes.
    val_max_items: int = 50_000
    patience: int = 2  # validations without improvement before stopping early
    seed: int = 42


# Measured on an H200 (scripts/bench_gpu_finetune.py, online-retail): full fine-tuning with large batches
# beats the frozen encoder (test Recall@10 of the text model +53%, the hybrid's cold slice +73%), where the
# small CPU budget barely moves it. Used when a GPU is present and train_profile is "auto".
GPU_RECIPE = {"batch_size": 2048, "learning_rate": 2e-4, "max_steps": 130, "epochs": 10, "eval_every": 13, "patience": 4}
TRAIN_PROFILES = ("auto", "params")


SIGNALS = ("price", "sales", "rating")  # numeric item signals the fusion projection can read


@dataclass(frozen=True)
class FusionConfig:
    """What is fused and how the projection is trained (defaults measured in scripts/bench_fusion.py)."""

    enabled: bool = True
    signals: tuple[str, ...] = SIGNALS  # numeric signals fed to the projection (those the data has)
    text_adaptor: bool = True  # also learn the residual linear map A on the text vector
    hidden: int = 64  # width of the feature projection's hidden layer
    steps: int = 600
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.05
    eval_every: int = 50
    patience: int = 4  # validations without improvement before stopping
    new_item_dropout: float = 0.2  # share of training items shown to the projection with the 0-sales value
    # how a step is judged: "pseudo_cold" = validation Recall@k on warm items held out of the pairs and shown
    # as new (what the hybrid needs from vectors: its EASE part knows the warm items); "validation" = plain
    # validation Recall@k (what the text model alone needs); "auto" = pseudo_cold for the hybrid candidate,
    # validation for the text candidate
    select_on: str = "auto"  # "pseudo_cold" holds out the split's tuning fold (SplitConfig.tuning_share)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.select_on not in ("auto", "pseudo_cold", "validation"):
            raise ValueError(f"fusion select_on must be auto, pseudo_cold or validation, got {self.select_on!r}")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown fusion signals {unknown} (known: {', '.join(SIGNALS)})")


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10
    batch_size: int = 1024  # queries scored per matrix product


CANDIDATES = ("hybrid", "text")


@dataclass(frozen=True)
class GateConfig:
    """The promotion gate's thresholds. Metric names are bases: `_at_{k}` is appended (k = EvalConfig.k)."""

    primary_metric: str = "ndcg"
    min_relative_gain: float = 0.01  # the challenger must beat the champion's primary metric by 1%: no churn on noise
    # metric base -> largest tolerated relative drop against the champion
    guardrails: tuple[tuple[str, float], ...] = (("cold_recall", 0.05), ("coverage", 0.10), ("recall", 0.02))
    # the first model ever must beat each of these on the primary metric: by default every registered baseline
    # (`recsys.model.baselines.BASELINES`); one that does not apply to a run (ALS below the scalable path's
    # catalog size, trending on data without time) is reported as not applicable, not as missing evidence
    baselines: tuple[str, ...] = ("popularity", "trending", "itemknn", "ease", "frozen", "als")
    require_approval: bool = False  # pause for a reviewer (Airflow human-in-the-loop) before moving the alias
    confidence: float = 0.95  # paired-bootstrap interval of a relative change against the champion
    bootstrap_samples: int = 2000
    # fewest test users a champion comparison may rest on (after excluding what the champion trained on)
    min_test_users: int = 50
    not_applicable: tuple[str, ...] = ()  # guardrail bases with no evidence expected (e.g. cold_recall without cold items)
    # most churn tolerated against the champion: 1 - mean overlap@k of the related-item lists (None = off;
    # the churn is measured and reported either way, `recsys.evaluation.churn`)
    max_churn: float | None = None


@dataclass(frozen=True)
class PipelineConfig:
    dataset: str = "online-retail"  # a packaged data set, or "files" for a shop's own files
    items_path: str | None = None  # with dataset="files": the catalog (CSV or Parquet, canonical schema)
    interactions_path: str | None = None
    warehouse_dataset: str | None = None  # with dataset="warehouse": the data set's name in the warehouse (what ingest loaded)
    sample_users: int | None = None  # keep only this many users (deterministic) for quick runs
    model_name: str = "recsys-item-encoder"
    experiment: str = "recsys-training"
    min_text_share: float = 0.9
    split: SplitConfig = field(default_factory=SplitConfig)
    documents: DocumentConfig = field(default_factory=DocumentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # the model packaged and put to the gate: "hybrid" (text + behaviour) or "text" (the fine-tuned
    # encoder alone: weaker, e.g. to check that the gate refuses a worse model)
    candidate: str = "hybrid"
    # "auto": the measured GPU recipe (GPU_RECIPE) when training runs on a GPU, else the train Params;
    # "params": always the train Params as given
    train_profile: str = "auto"
    trigger_reason: str | None = None  # why the run was started (drift monitor, scheduled retraining, a person)
    # items per embedding shard: each shard is one mapped task, so Celery workers embed a large catalog
    # in parallel (0 = the whole catalog in one task)
    embed_shard_size: int = 2000
    # items per publishing shard: each is one mapped task writing its rows to a staging table; a last task
    # swaps them all in at once (0 = one task). Each shard loads the model, so shards are large.
    publish_shard_size: int = 25_000
    # route fine-tuning to the `gpu` Celery queue (a worker on a GPU node serves it)
    finetune_on_gpu: bool = False
    # catalogs with at least this many items are packaged with a FAISS index (recsys.model.ann) that serving
    # uses for nearest-vector searches; smaller ones are searched exactly (see AnnConfig for why 50k)
    ann_min_items: int = 50_000
    # the dense hybrid keeps an n x n item-item matrix and inverts an n x n Gram matrix (time n^3): a larger
    # catalog takes the scalable path, where the Gram matrix of its max_dense_items most-bought items (the
    # head) is inverted and every other item's column is folded in against it (recsys.model.hybrid).
    # 10,000: one fit there took 43 s and 3.2 GiB peak on 2 cores, 15,000 took 161 s and 7.0 GiB, and a run
    # makes 10-15 fits (scripts/bench_dense_fit.py; README *Large catalogs*)
    max_dense_items: int = 10_000

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PipelineConfig":
        """Build from the DAG's flat Params (declared in `recsys.settings`); unknown keys are ignored,
        None/"" mean 'default'.

        Raises:
            InputError: a setting not of its type, out of its declared bounds or not one of its choices
                (checked from the declaration); the sections' own checks (fusion signals, document fields).
        """
        from recsys.settings import config_from_params  # settings imports this module

        return config_from_params(params)

    def train_for(self, device_type: str) -> TrainConfig:
        """The training settings for a device ("cuda" or "cpu")."""
        if self.train_profile == "auto" and device_type == "cuda" and self.train.max_steps > 0:
            return replace(self.train, **GPU_RECIPE)
        return self.train

    def flat(self) -> dict[str, Any]:
        """Flattened `section.field` dict, for logging as MLflow params."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "__dataclass_fields__"):
                out.update({f"{f.name}.{k}": v for k, v in asdict(value).items()})
            else:
                out[f.name] = value
        return out
