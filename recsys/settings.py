"""One declaration per trigger-form setting: the training DAG's Params, `PipelineConfig.from_params` and
the retraining recipe (champion's MLflow params -> the DAG's conf) are all generated from `SETTINGS`.

Side-effect free and pandas-free (the DAG file reads it whenever Airflow parses it); no Airflow import:
`dag_params` returns plain `Param` keyword arguments and the DAG wraps them.

Defaults are never repeated here: they are the `PipelineConfig` dataclass defaults (lists shown
comma-separated). A setting is in the **recipe** when it shapes the model (training, fusion, documents,
the base encoder, the candidate, k, the seed, the user sample); not when it names the data or the run
(dataset, paths, model name, trigger reason), sets the gate's policy, or only says where/how fast work
runs (shards, GPU queue, precision, ANN threshold): a retraining takes those from its own trigger.
"""

from __future__ import annotations

import ast
import math
from datetime import date
from dataclasses import dataclass, replace
from typing import Any, Literal

from recsys.config import CANDIDATES, FIELDS, SIGNALS, TRAIN_PROFILES, GateConfig, PipelineConfig
from recsys.errors import InputError

Kind = Literal["integer", "number", "boolean", "string", "enum", "list", "date"]

PACKAGED_DATASETS = ("online-retail", "movielens-100k", "instacart-sample", "completejourney")  # = recsys.data.datasets.DATASET_NAMES (a test checks)
DATASETS = (*PACKAGED_DATASETS, "files", "warehouse")
# A packaged data set's own time protocol (README, *Splits*): used when a run leaves both dates empty.
# completejourney: months 1-10 train, November validation, December test; the first date is also the end of
# its price window (`recsys.data.datasets.completejourney.PRICE_WINDOW_END`, a test checks).
PACKAGED_SPLIT_DATES: dict[str, tuple[str, str]] = {"completejourney": ("2017-11-01", "2017-12-01")}
GATE_METRICS = ("ndcg", "recall", "mrr", "hit_rate")
BASELINES = ("popularity", "trending", "itemknn", "ease", "frozen", "als")
_NO_DEFAULT = object()  # marks "the default is the PipelineConfig field's"


@dataclass(frozen=True)
class Setting:
    """One trigger-form setting. `paths`: where it lives in `PipelineConfig` (dotted; "gate.guardrails[base]"
    is one guardrail's tolerance); empty for a DAG-only Param (then `default` is given)."""

    name: str
    paths: tuple[str, ...]
    kind: Kind
    description: str | None = None
    nullable: bool = False  # None is a value of its own (the Param accepts null)
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    choices: tuple[str, ...] = ()  # enum: the values; list: the items allowed
    recipe: bool = False  # carried from the champion into a retraining
    form: bool = True  # a Param of the DAG's trigger form (else accepted in the conf only)
    default: Any = _NO_DEFAULT

    @property
    def config_default(self) -> Any:
        """The default as `PipelineConfig` holds it (a tuple for lists)."""
        return get_path(PipelineConfig(), self.paths[0]) if self.paths else self.default

    @property
    def param_default(self) -> Any:
        """The default as the trigger form shows it (lists comma-separated)."""
        value = self.config_default
        return ",".join(value) if self.kind == "list" else value

    def parse(self, value: Any) -> Any:
        """A form or conf value (not None / "") -> the config's value, checked against the declared type,
        bounds and choices. The trigger form checks the same JSON schema, but a run's conf (REST API, the
        drift monitor, conf-only settings) reaches here without it.

        Raises:
            InputError: the value is not of the setting's type, out of its bounds, or not one of its choices.
        """
        try:
            parsed = self._convert(value)
        except (TypeError, ValueError):
            raise InputError(f"{self.name} must be {_KIND_WORDS[self.kind]}, got {value!r}") from None
        self.check(parsed)
        return parsed

    def _convert(self, value: Any) -> Any:
        if self.kind == "integer":
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if self.kind == "number":
            return float(value)
        if self.kind == "boolean":
            return _as_bool(value)
        if self.kind == "list":
            return tuple(v.strip() for v in str(value).split(",") if v.strip())
        if self.kind == "date":
            return date.fromisoformat(str(value).strip()).isoformat()
        return str(value)

    def check(self, value: Any) -> None:
        """Raise `InputError` when a parsed value breaks the declared bounds or choices."""
        if self.kind in ("integer", "number"):
            low = f"[{self.minimum:g}" if self.minimum is not None else f"({self.exclusive_minimum:g}" if self.exclusive_minimum is not None else "(-inf"
            high = f"{self.maximum:g}]" if self.maximum is not None else f"{self.exclusive_maximum:g})" if self.exclusive_maximum is not None else "inf)"
            inside = (
                math.isfinite(value)
                and (self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.exclusive_maximum is None or value < self.exclusive_maximum)
            )
            if not inside:
                raise InputError(f"{self.name} must be in {low}, {high}, got {value:g}")
        elif self.choices and self.kind == "enum" and value not in self.choices:
            raise InputError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        elif self.choices and self.kind == "list" and (unknown := [v for v in value if v not in self.choices]):
            raise InputError(f"{self.name} takes only {', '.join(self.choices)}; unknown: {', '.join(unknown)}")

    def from_logged(self, text: str) -> Any:
        """An MLflow param (str() of the config's value; None logged as "") -> the form's value; None when unset."""
        if text in ("", "None"):
            return None
        if self.kind == "integer":
            return int(float(text))
        if self.kind == "number":
            return float(text)
        if self.kind == "boolean":
            return _as_bool(text)
        if self.kind == "list":
            items = ast.literal_eval(text) if text.startswith(("(", "[")) else text.split(",")
            return ",".join(str(i).strip() for i in items) or None
        return text


_KIND_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "enum": "a string",
    "list": "a comma-separated list",
    "date": "a date (YYYY-MM-DD)",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError(value)  # "ture" is a typo, not False
        return word in _TRUE
    return bool(value)


def _tolerance(base: str, what: str) -> Setting:
    return Setting(f"gate_tolerance_{base}", (f"gate.guardrails[{base}]",), "number", f"Gate: tolerated relative drop of {what}", minimum=0, maximum=1)


# in the trigger form's order; `form=False` ones are accepted in a run's conf only (benchmarks, advanced)
SETTINGS: tuple[Setting, ...] = (
    Setting("dataset", ("dataset",), "enum", "Packaged real data set, 'files' for your own, or 'warehouse' for what the ingest DAG loaded", choices=DATASETS),
    Setting("warehouse_dataset", ("warehouse_dataset",), "string", "With dataset=warehouse: the data set's name in the warehouse", nullable=True),
    Setting("trigger_reason", ("trigger_reason",), "string", "Why this run was started (set by the drift monitor and the scheduled retraining)", nullable=True),
    Setting("items_path", ("items_path",), "string", "With dataset=files: catalog CSV/Parquet", nullable=True),
    Setting("interactions_path", ("interactions_path",), "string", "With dataset=files: interactions CSV/Parquet", nullable=True),
    # the sample decides which users the model learns from: part of the recipe
    Setting("sample_users", ("sample_users",), "integer", "Keep only this many users (quick runs)", nullable=True, minimum=1, recipe=True),
    Setting("publish_shard_size", ("publish_shard_size",), "integer", "Items per publishing task (mapped: Celery workers publish shards in parallel, then one swap); 0 = one task", minimum=0, maximum=10_000_000),
    Setting("embed_shard_size", ("embed_shard_size",), "integer", "Items per embedding task (mapped: Celery workers embed shards in parallel); 0 = one task", minimum=0, maximum=10_000_000),
    Setting(
        "encoder_precision",
        ("encoder.precision",),
        "enum",
        "Embedding precision: auto = bf16 autocast on a GPU and on CPUs with native bf16 (1.6x faster here), else float32",
        choices=("auto", "float32", "bfloat16"),
    ),
    Setting("finetune_on_gpu", ("finetune_on_gpu",), "boolean", "Run fine-tuning on the Celery queue 'gpu' (a worker on a GPU node)"),
    Setting("max_train_steps", ("train.max_steps",), "integer", "Fine-tuning steps (0 = skip)", minimum=0, maximum=1_000_000, recipe=True),
    Setting("pair_strategy", ("train.pair_strategy",), "enum", "Training pairs: strongest co-items, or random basket pairs", choices=("cooccurrence", "random"), recipe=True),
    Setting("train_batch_size", ("train.batch_size",), "integer", minimum=2, maximum=4096, recipe=True),
    Setting(
        "train_profile",
        ("train_profile",),
        "enum",
        "auto: on a GPU use the measured GPU recipe (batch 2048, lr 2e-4, up to 10 epochs), on the CPU these Params; params: always these Params",
        choices=TRAIN_PROFILES,
        recipe=True,
    ),
    Setting("learning_rate", ("train.learning_rate",), "number", exclusive_minimum=0, maximum=1, recipe=True),
    # the ranking cut-off: the hybrid's weights are tuned at k, and the drift reference is measured at k
    Setting("k", ("eval.k",), "integer", "Cut-off of the ranking metrics", minimum=1, maximum=100, recipe=True),
    Setting("seed", ("split.seed", "train.seed", "fusion.seed"), "integer", recipe=True),
    Setting("model_name", ("model_name",), "string", "Registered model name in MLflow"),
    Setting(
        "document_template",
        ("documents.template",),
        "list",
        "Parts of each item's document, in order (numeric signals as bands; sales_band is available but off: it hurts new items)",
        choices=FIELDS,
        recipe=True,
    ),
    Setting("min_text_share", ("min_text_share",), "number", "Share of items that must have a title", minimum=0, maximum=1),
    Setting("fusion", ("fusion.enabled",), "boolean", "Fuse the text vectors with the numeric signals through a learned projection (kept only if it wins on validation)", recipe=True),
    Setting(
        "fusion_signals",
        ("fusion.signals",),
        "list",
        "Numeric signals the fusion projection reads (comma-separated: price, sales, rating; those the data has)",
        choices=SIGNALS,
        recipe=True,
    ),
    Setting("fusion_text_adaptor", ("fusion.text_adaptor",), "boolean", "Fusion also learns a residual linear adaptor on the text vector", recipe=True),
    Setting(
        "eval_max_users",
        ("split.max_eval_users",),
        "integer",
        "Evaluate (tuning, test report, gate) on at most this many users per stage: a seeded sample, named in the report (0 = every user; full ranking either way)",
        minimum=0,
        recipe=True,
    ),
    # a bound on the fusion stage's cost: it trains three variants, each validated every 50 steps with early stopping
    Setting("fusion_steps", ("fusion.steps",), "integer", "Most training steps of each fusion variant (validated every 50, early stopping)", minimum=1, recipe=True, form=False),
    Setting(
        "candidate", ("candidate",), "enum", "Model put to the gate: hybrid (text + behaviour) or the fine-tuned text model alone", choices=CANDIDATES, recipe=True
    ),
    Setting("gate_primary_metric", ("gate.primary_metric",), "enum", "Gate: the metric (at k) that must improve", choices=GATE_METRICS),
    Setting("gate_min_relative_gain", ("gate.min_relative_gain",), "number", "Gate: required relative improvement over the champion", minimum=0, maximum=1),
    Setting(
        "gate_max_churn",
        ("gate.max_churn",),
        "number",
        "Gate: most churn tolerated vs the champion (share of top-k related-item slots that change, 0-1; empty = off)",
        nullable=True,
        minimum=0,
        maximum=1,
    ),
    _tolerance("cold_recall", "cold-start recall"),
    _tolerance("coverage", "catalog coverage"),
    _tolerance("recall", "Recall@k"),
    Setting(
        "gate_confidence",
        ("gate.confidence",),
        "number",
        "Gate: confidence of the paired-bootstrap interval (the gain's lower bound must be above 0)",
        minimum=0.5,
        exclusive_maximum=1,
    ),
    Setting(
        "gate_min_test_users",
        ("gate.min_test_users",),
        "integer",
        "Gate: fewest test users a champion comparison may rest on, after excluding what the champion trained on",
        minimum=1,
    ),
    Setting(
        "gate_not_applicable",
        ("gate.not_applicable",),
        "list",
        "Gate: guardrails with no evidence expected, skipped and reported (comma-separated bases, e.g. cold_recall)",
        choices=tuple(base for base, _ in GateConfig.guardrails),
    ),
    # the salt is the data set's (stored with it): a retraining keeps the stored one
    Setting("time_val_start", ("split.time_val_start",), "date", "Time split by calendar: validation from this date (ISO, UTC; with time_test_start). Empty = the data set's own protocol (completejourney: 2017-11-01 / 2017-12-01), else the last 10% / 10% of interactions", nullable=True),
    Setting("time_test_start", ("split.time_test_start",), "date", "Time split by calendar: test from this date (ISO, UTC; with time_val_start)", nullable=True),
    Setting("split_salt", ("split.salt",), "string", "Re-draw the stable split with a new salt (empty = the data set's stored salt). On purpose only: the gate sees it"),
    Setting("gate_baselines", ("gate.baselines",), "list", "Gate: the baselines the FIRST model of a name must beat on the primary metric, each where it applies to the run (ALS: large catalogs; trending: data with time; comma-separated)", choices=BASELINES),
    Setting("require_approval", ("gate.require_approval",), "boolean", "Pause for a reviewer before moving the champion alias"),
    Setting("publish", (), "boolean", "After a promotion, publish recommendations for every item to the warehouse", default=True),
    # conf-only settings (no form field)
    Setting("model_path", ("encoder.model_path",), "string", "The base encoder: a local Hugging Face model path (empty = the packaged MiniLM)", nullable=True, recipe=True, form=False),
    Setting("experiment", ("experiment",), "string", "MLflow experiment of the training runs", form=False),
    Setting("head", ("train.head",), "enum", "Fine-tuning head: dot or additive", choices=("dot", "additive"), recipe=True, form=False),
    Setting("freeze_layers", ("train.freeze_layers",), "integer", "Freeze the embeddings and the lowest N transformer layers", minimum=0, recipe=True, form=False),
    Setting(
        "finetune_val_items",
        ("train.val_max_items",),
        "integer",
        "Fine-tuning's validation ranks over at most this many items (every validation query and target, the rest a seeded sample; 0 = the whole catalog)",
        minimum=0,
        recipe=True,
        form=False,
    ),
    Setting(
        "fusion_select_on",
        ("fusion.select_on",),
        "enum",
        "How a fusion step is judged: auto, pseudo_cold or validation",
        choices=("auto", "pseudo_cold", "validation"),
        recipe=True,
        form=False,
    ),
    Setting("ann_min_items", ("ann_min_items",), "integer", "Catalogs with at least this many items are packaged with a FAISS index", minimum=1, form=False),
    Setting("max_dense_items", ("max_dense_items",), "integer", "Largest catalog the dense hybrid takes whole (an n x n matrix); a larger one takes the scalable path: the Gram matrix of its this-many most-bought items inverted, every other item folded in against it", minimum=1, form=False),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
RECIPE: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.recipe)


def get_path(cfg: PipelineConfig, path: str) -> Any:
    """The value at a dotted path ("train.max_steps", "gate.guardrails[recall]")."""
    path, _, key = path.partition("[")
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return dict(value)[key.rstrip("]")] if key else value


def param_spec(setting: Setting) -> dict[str, Any]:
    """`airflow.sdk.Param` keyword arguments of one form setting."""
    spec: dict[str, Any] = {"default": setting.param_default}
    if setting.description:
        spec["description"] = setting.description
    if setting.kind == "enum":
        spec["enum"] = list(setting.choices)
    else:
        base = "string" if setting.kind in ("list", "date") else setting.kind
        spec["type"] = ["null", base] if setting.nullable else base
        if setting.kind == "date":
            spec["format"] = "date"  # the trigger form shows a date picker
    bounds = {"minimum": setting.minimum, "maximum": setting.maximum, "exclusiveMinimum": setting.exclusive_minimum, "exclusiveMaximum": setting.exclusive_maximum}
    return spec | {k: v for k, v in bounds.items() if v is not None}


def dag_params() -> dict[str, dict[str, Any]]:
    """The training DAG's trigger form: name -> `Param` keyword arguments, in form order."""
    return {s.name: param_spec(s) for s in SETTINGS if s.form}


def config_from_params(params: dict[str, Any]) -> PipelineConfig:
    """`PipelineConfig.from_params`: every declared setting present (not None / "") is parsed and set at its paths."""
    cfg = PipelineConfig()
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    tolerances = dict(cfg.gate.guardrails)
    for name, raw in params.items():
        setting = BY_NAME.get(name)
        if setting is None or raw is None or raw == "":
            continue
        value = setting.parse(raw)
        for path in setting.paths:
            if "[" in path:
                tolerances[path.partition("[")[2].rstrip("]")] = value
            elif "." in path:
                section, attr = path.split(".")
                sections.setdefault(section, {})[attr] = value
            else:
                top[path] = value
    sections.setdefault("gate", {})["guardrails"] = tuple(tolerances.items())
    protocol = PACKAGED_SPLIT_DATES.get(top.get("dataset", cfg.dataset))
    split = sections.setdefault("split", {})
    if protocol and "time_val_start" not in split and "time_test_start" not in split:
        split["time_val_start"], split["time_test_start"] = protocol
    # each section is rebuilt once, so its own checks (FusionConfig, DocumentConfig) see the final values
    return replace(cfg, **top, **{section: replace(getattr(cfg, section), **values) for section, values in sections.items()})


def recipe_from_logged(logged: dict[str, str]) -> dict[str, Any]:
    """The champion's MLflow params (`PipelineConfig.flat()`, stringified) -> the recipe settings' conf
    values, typed as their Params want; settings not logged or logged as None are left out."""
    recipe = {}
    for setting in RECIPE:
        text = logged.get(setting.paths[0])
        value = None if text is None else setting.from_logged(str(text))
        if value is not None:
            recipe[setting.name] = value
    return recipe
