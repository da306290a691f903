"""recsys.settings, the one declaration per setting: the DAG's Params, `from_params` and the retraining
recipe generated from it agree, and a champion's recipe survives the trip through MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recsys.config import PipelineConfig
from recsys.errors import InputError
from recsys.settings import BY_NAME, DATASETS, PACKAGED_DATASETS, RECIPE, SETTINGS, Setting, dag_params, get_path, recipe_from_logged

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "recsys_training.py"


def _non_default(s: Setting) -> Any:
    """A valid trigger-form value other than the default, chosen from the declaration."""
    default = s.param_default
    if s.kind == "boolean":
        return not default
    if s.kind == "enum":
        return next(c for c in s.choices if c != default)
    if s.kind == "list":
        items = default.split(",") if default else []
        return ",".join(items[:-1]) if len(items) > 1 else s.choices[0]
    if s.kind == "string":
        return f"{default or '/tmp/x'}-other"
    if s.kind == "date":  # the calendar split's dates, in declaration order: a valid (val < test) pair
        return f"2024-0{1 + [d.name for d in SETTINGS if d.kind == 'date'].index(s.name)}-01"
    low = s.minimum if s.minimum is not None else (s.exclusive_minimum if s.exclusive_minimum is not None else 0)
    high = s.maximum if s.maximum is not None else s.exclusive_maximum
    if s.kind == "integer":
        value = (int(low) + 3) if default is None else default + 3
        return value if high is None or value < high else int(low) + (1 if s.exclusive_minimum is not None else 0)
    if default is None:  # an optional number, off by default (gate_max_churn): any value in bounds turns it on
        return (low + high) / 2 if high is not None else low + 0.5
    value = (default + high) / 2 if high is not None and default < high else default * 2 + 0.25
    return value


def _conf() -> dict[str, Any]:
    return {s.name: _non_default(s) for s in SETTINGS}


def test_every_setting_has_a_valid_non_default_and_a_known_path() -> None:
    conf = _conf()
    cfg = PipelineConfig.from_params(conf)
    for s in SETTINGS:
        assert conf[s.name] != s.param_default, s.name
        for path in s.paths:
            assert get_path(cfg, path) == s.parse(conf[s.name]), (s.name, path)
            assert get_path(cfg, path) != get_path(PipelineConfig(), path), (s.name, path)


def test_recipe_round_trip_through_mlflow_params() -> None:
    """form -> PipelineConfig -> flat() as MLflow stores it (str) -> recipe -> the same form values and config."""
    conf = _conf()
    cfg = PipelineConfig.from_params(conf)
    logged = {k: "" if v is None else str(v) for k, v in cfg.flat().items()}  # tracking.log_params: None as ""
    recipe = recipe_from_logged(logged)
    assert set(recipe) == {s.name for s in RECIPE}
    for s in RECIPE:
        assert recipe[s.name] == conf[s.name] and type(recipe[s.name]) is type(conf[s.name]), s.name
    again = PipelineConfig.from_params(recipe)
    for s in RECIPE:
        for path in s.paths:
            assert get_path(again, path) == get_path(cfg, path), (s.name, path)


def test_recipe_of_a_default_config_retrains_the_default() -> None:
    logged = {k: "" if v is None else str(v) for k, v in PipelineConfig().flat().items()}
    recipe = recipe_from_logged(logged)
    assert "sample_users" not in recipe and "model_path" not in recipe  # None is not carried
    assert PipelineConfig.from_params(recipe) == PipelineConfig()


def test_recipe_settings_are_those_that_shape_the_model() -> None:
    assert {s.name for s in RECIPE} == {
        "sample_users", "max_train_steps", "pair_strategy", "train_batch_size", "train_profile", "learning_rate", "k", "seed",
        "document_template", "fusion", "fusion_signals", "fusion_text_adaptor", "candidate", "model_path", "head", "freeze_layers", "fusion_select_on", "fusion_steps", "eval_max_users", "finetune_val_items",
    }  # fmt: skip
    assert all(s.paths for s in RECIPE)


def test_dag_params_follow_the_declaration() -> None:
    params = dag_params()
    assert list(params) == [s.name for s in SETTINGS if s.form]
    for name, spec in params.items():
        s = BY_NAME[name]
        assert spec["default"] == s.param_default
        if s.kind == "enum":
            assert spec["enum"] == list(s.choices) and spec["default"] in s.choices
    assert params["k"] == {"default": 10, "type": "integer", "minimum": 1, "maximum": 100, "description": "Cut-off of the ranking metrics"}
    assert params["sample_users"]["type"] == ["null", "integer"]
    assert params["fusion_signals"]["default"] == "price,sales,rating" and params["gate_not_applicable"]["default"] == ""
    assert params["gate_confidence"]["exclusiveMaximum"] == 1 and params["learning_rate"]["exclusiveMinimum"] == 0


def test_the_dag_file_declares_no_param_of_its_own() -> None:
    """Every Param of the training DAG comes from the declaration: the file writes none by hand."""
    tree = ast.parse(DAG_FILE.read_text())
    hand_made = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Param" and (n.args or any(k.arg for k in n.keywords))]
    assert not hand_made, [ast.unparse(n) for n in hand_made]


def test_loaded_dag_params_equal_the_declaration() -> None:
    pytest.importorskip("airflow")
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["recsys_training"]
    assert set(dag.params) == set(dag_params())
    for name, spec in dag_params().items():
        param = dag.params.get_param(name)
        assert param.value == spec["default"] and param.description == spec.get("description"), name
        assert param.schema == {k: v for k, v in spec.items() if k not in ("default", "description")}, name


def test_packaged_datasets_are_the_loaders() -> None:
    from recsys.data.datasets import DATASET_NAMES

    assert sorted(PACKAGED_DATASETS) == list(DATASET_NAMES) and DATASETS[-2:] == ("files", "warehouse")


def test_completejourney_runs_on_its_own_protocol_unless_told_otherwise() -> None:
    """Choosing completejourney on the form (or `make demo DATASET=completejourney`) gives the README's
    months 1-10 / November / December split; dates given on the form win; other data sets keep the shares."""
    import pandas as pd

    from recsys.data.datasets.completejourney import PRICE_WINDOW_END

    cfg = PipelineConfig.from_params({"dataset": "completejourney"})
    assert (cfg.split.time_val_start, cfg.split.time_test_start) == ("2017-11-01", "2017-12-01")
    assert PRICE_WINDOW_END == pd.Timestamp(cfg.split.time_val_start)  # the price never sees validation or test
    own = PipelineConfig.from_params({"dataset": "completejourney", "time_val_start": "2017-10-01", "time_test_start": "2017-11-15"})
    assert (own.split.time_val_start, own.split.time_test_start) == ("2017-10-01", "2017-11-15")
    assert PipelineConfig.from_params({"dataset": "movielens-100k"}).split.time_val_start is None
    with pytest.raises(ValueError, match="set together"):  # half a protocol is refused, not completed
        PipelineConfig.from_params({"dataset": "completejourney", "time_val_start": "2017-10-01"})


def test_settings_import_no_heavy_library() -> None:
    """The DAG file reads the settings whenever Airflow parses it."""
    code = "import sys, recsys.settings; print(sorted({'pandas', 'numpy', 'airflow', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DAG_FILE.parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        # the declared choices and bounds, checked for a run's conf too (the REST API and the drift monitor
        # reach from_params without the trigger form's JSON-schema check)
        ({"candidate": "best"}, "candidate must be one of hybrid, text, got 'best'"),
        ({"train_profile": "x"}, "train_profile must be one of auto, params, got 'x'"),
        ({"encoder_precision": "fp8"}, "encoder_precision must be one of auto, float32, bfloat16, got 'fp8'"),
        ({"gate_confidence": 0.3}, r"gate_confidence must be in \[0.5, 1\), got 0.3"),
        ({"k": 0}, r"k must be in \[1, 100\], got 0"),
        ({"learning_rate": 0}, r"learning_rate must be in \(0, 1\], got 0"),
        ({"ann_min_items": 0}, r"ann_min_items must be in \[1, inf\), got 0"),
        ({"gate_min_relative_gain": float("nan")}, r"gate_min_relative_gain must be in \[0, 1\], got nan"),
        ({"max_train_steps": "ten"}, "max_train_steps must be an integer, got 'ten'"),
        ({"max_train_steps": 2.5}, "max_train_steps must be an integer, got 2.5"),
        ({"fusion": "ture"}, "fusion must be true or false, got 'ture'"),
        ({"time_val_start": "Nov 1"}, r"time_val_start must be a date \(YYYY-MM-DD\), got 'Nov 1'"),
        ({"gate_baselines": "popularity,bm25"}, "gate_baselines takes only popularity, trending, itemknn, ease, frozen, als; unknown: bm25"),
        ({"fusion_signals": "price,colour"}, "fusion_signals takes only price, sales, rating; unknown: colour"),
    ],
)
def test_from_params_checks_every_declared_bound_and_choice(conf: dict, error: str) -> None:
    with pytest.raises(InputError, match=f"^{error}$"):
        PipelineConfig.from_params(conf)


def test_values_on_the_bounds_are_accepted() -> None:
    cfg = PipelineConfig.from_params({"k": 100, "gate_confidence": 0.5, "learning_rate": 1, "max_train_steps": "0", "fusion": "off", "train_batch_size": 2.0})
    assert (cfg.eval.k, cfg.gate.confidence, cfg.train.learning_rate, cfg.train.max_steps, cfg.fusion.enabled, cfg.train.batch_size) == (100, 0.5, 1.0, 0, False, 2)
