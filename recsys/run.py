"""The run store: where one pipeline run reads and writes, and what each file in its folder is called.

A run folder (`RunFolder`) names every artifact the stages pass to each other (`run.split_info`,
`run.frozen_embeddings`, `run.per_user_test`, ...): no other module spells an artifact's file name.
The run context (`RunContext`) adds what a stage needs besides files: the run's key and date, the
tracking and warehouse URLs, and the run's MLflow run id once `validate` has opened it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import atomic
from recsys.data import schema as S
from recsys.paths import ProjectPaths, local_artifact_root, project_paths, resolve_tracking_uri, resolve_warehouse_url
from recsys.data.splits import Split

# the model directory's entries (the packaged model's artifacts, `recsys.serving.ItemRecommender`)
CATALOG_ARTIFACT = "catalog"
HYBRID_ARTIFACT = "hybrid"
HYBRID_CONFIG_ARTIFACT = "hybrid_config"
ENCODER_ARTIFACT = "encoder"
BEHAVIOUR_ARTIFACT = "behaviour"  # co-purchase counts, prices, categories: bundles and reasons
REFERENCE_ARTIFACT = "reference"  # the training data's reference statistics, for the drift monitor
CONFIG_ARTIFACT = "config"  # the run's configuration (document template etc.)
FUSION_ARTIFACT = "fusion"  # the learned fusion of text vectors with numeric signals (absent when not kept)
ANN_ARTIFACT = "ann"  # FAISS index over the item vectors (large catalogs only: PipelineConfig.ann_min_items)
MODEL_DIR_FILES = {
    CATALOG_ARTIFACT: "catalog.npz",
    HYBRID_ARTIFACT: "hybrid.npz",
    HYBRID_CONFIG_ARTIFACT: "hybrid.json",
    BEHAVIOUR_ARTIFACT: "behaviour.npz",
    ENCODER_ARTIFACT: "encoder",
    REFERENCE_ARTIFACT: "reference",
    CONFIG_ARTIFACT: "config.json",
    FUSION_ARTIFACT: "fusion",
    ANN_ARTIFACT: "ann",
}


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder, by name."""

    run_dir: Path

    # --- validate: the validated canonical data set and the validation report
    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def validated_items(self) -> Path:
        return self.data_dir / "items.parquet"

    @property
    def validated_interactions(self) -> Path:
        return self.data_dir / "interactions.parquet"

    @property
    def dataset_info(self) -> Path:
        return self.data_dir / "dataset.json"

    @property
    def validation_dir(self) -> Path:
        return self.run_dir / "validation"

    @property
    def validation_report(self) -> Path:
        return self.validation_dir / "validation.json"

    # --- load_and_split: the split, the catalog, the data's identity and the item documents
    @property
    def split_dir(self) -> Path:
        return self.run_dir / "split"

    @property
    def split_catalog(self) -> Path:
        return self.split_dir / "catalog.parquet"

    @property
    def split_pairs(self) -> Path:
        return self.split_dir / "pairs.parquet"

    @property
    def split_info(self) -> Path:
        return self.split_dir / "split.json"

    @property
    def identity(self) -> Path:
        return self.split_dir / "identity.json"

    @property
    def documents(self) -> Path:
        return self.split_dir / "documents.json"

    # --- embed / finetune / fuse: item vectors in catalog order
    @property
    def embeddings_dir(self) -> Path:
        return self.run_dir / "embeddings"

    def frozen_shard(self, index: int) -> Path:
        return self.embeddings_dir / "frozen-shards" / f"shard-{index:05d}.npy"

    @property
    def frozen_embeddings(self) -> Path:
        return self.embeddings_dir / "frozen.npy"

    @property
    def finetuned_embeddings(self) -> Path:
        return self.embeddings_dir / "finetuned.npy"

    @property
    def fused_embeddings(self) -> Path:
        """The item vectors every later stage uses (the fine-tuned ones when fusion is off or not kept)."""
        return self.embeddings_dir / "fused.npy"

    @property
    def train_history(self) -> Path:
        return self.run_dir / "train_history.json"

    # --- the model directory (what `package` logs as the model)
    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def model_file(self, artifact: str) -> Path:
        """The model directory's entry for `artifact` (a key of `MODEL_DIR_FILES`)."""
        return self.model_dir / MODEL_DIR_FILES[artifact]

    @property
    def encoder_dir(self) -> Path:
        return self.model_file(ENCODER_ARTIFACT)

    @property
    def fusion_dir(self) -> Path:
        return self.model_file(FUSION_ARTIFACT)

    @property
    def hybrid_weights(self) -> Path:
        return self.model_file(HYBRID_ARTIFACT)

    @property
    def hybrid_info(self) -> Path:
        return self.model_file(HYBRID_CONFIG_ARTIFACT)

    # --- evaluate and the gate
    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def exposure(self) -> Path:
        return self.run_dir / "exposure.json"

    @property
    def per_user_test(self) -> Path:
        """Per-user test metrics of every model: the drift reference and paired comparisons bootstrap over them."""
        return self.run_dir / "per_user_test.npz"

    @property
    def package_info(self) -> Path:
        return self.run_dir / "package.json"

    @property
    def champion_score(self) -> Path:
        return self.run_dir / "champion.json"

    @property
    def champion_lineage_dir(self) -> Path:
        return self.run_dir / "champion-lineage"

    @property
    def lineage_dir(self) -> Path:
        from recsys.tracking import LINEAGE_ARTIFACT  # the same name as the MLflow artifact folder

        return self.run_dir / LINEAGE_ARTIFACT

    @property
    def evaluation_dir(self) -> Path:
        return self.run_dir / "evaluation"

    @property
    def gate_record(self) -> Path:
        return self.evaluation_dir / "gate.json"


@dataclass(frozen=True)
class RunContext(RunFolder):
    """Where one pipeline run reads and writes, and the MLflow run it logs to."""

    paths: ProjectPaths
    run_key: str  # the orchestrator's run id: names the run folder and finds the MLflow run
    tracking_uri: str
    warehouse_url: str
    logical_date: pd.Timestamp  # the run's date: bounds the plausible-timestamp window (never now())
    mlflow_run_id: str | None = None  # opened by `validate`; every later stage logs to it

    @classmethod
    def create(
        cls,
        run_key: str,
        logical_date: str | pd.Timestamp,
        home: str | None = None,
        tracking_uri: str | None = None,
        warehouse_url: str | None = None,
        mlflow_run_id: str | None = None,
    ) -> "RunContext":
        """Resolve where a run reads and writes: explicit URLs (an orchestrator's connections) win over
        $MLFLOW_TRACKING_URI / $RECSYS_WAREHOUSE_URL, which win over the embedded defaults under the home."""
        paths = project_paths(home)
        return cls(
            run_dir=paths.run_dir(run_key),
            paths=paths,
            run_key=run_key,
            tracking_uri=resolve_tracking_uri(tracking_uri, paths),
            warehouse_url=resolve_warehouse_url(warehouse_url, paths),
            logical_date=pd.Timestamp(logical_date).tz_convert("UTC") if pd.Timestamp(logical_date).tzinfo else pd.Timestamp(logical_date, tz="UTC"),
            mlflow_run_id=mlflow_run_id,
        )

    def with_mlflow_run(self, mlflow_run_id: str) -> "RunContext":
        """The same run, logging to the MLflow run `validate` opened."""
        return replace(self, mlflow_run_id=mlflow_run_id)

    @property
    def local_artifact_root(self) -> Path | None:
        return local_artifact_root(self.paths, self.tracking_uri)

    def mlflow(self):
        """(the `recsys.tracking` module, a client of this run's tracking server)."""
        from recsys import tracking

        return tracking, tracking.client(self.tracking_uri)


def write_json(path: Path, data: Any) -> Path:
    """Write a run-folder JSON file atomically (creating its folder): a crash never leaves half a file behind."""
    return atomic.write_json(path, data, mkdir=True, indent=2, sort_keys=True, default=str)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def load_validated(run: RunFolder) -> S.Dataset:
    """The validated canonical data set `validate` wrote."""
    info = read_json(run.dataset_info)
    items = S.to_canonical_items(pd.read_parquet(run.validated_items))
    inter = S.to_canonical_interactions(pd.read_parquet(run.validated_interactions))
    return S.Dataset(info["name"], items, inter, info["has_time"], info["has_text"], info["source"])


def load_ratings(run: RunFolder) -> pd.DataFrame:
    """The validated interactions' user, item and rating columns (what the rating signals read)."""
    return pd.read_parquet(run.validated_interactions, columns=[S.USER_ID, S.ITEM_ID, S.RATING])


def load_events(run: RunFolder) -> pd.DataFrame:
    """Every validated interaction's user, item and time, repeat purchases included (the trend prior's input)."""
    return pd.read_parquet(run.validated_interactions, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])


def load_split(run: RunFolder) -> tuple[Split, pd.DataFrame]:
    """The split and the canonical catalog `load_and_split` wrote."""
    info = read_json(run.split_info)
    split = Split(
        pairs=pd.read_parquet(run.split_pairs),
        cold_items=frozenset(info["cold_items"]),
        protocol=info["protocol"],
        salt=info.get("salt", ""),
        tuning_items=frozenset(info.get("tuning_items", ())),
        max_eval_users=int(info.get("max_eval_users", 0)),
    )
    catalog = pd.read_parquet(run.split_catalog)
    return split, S.to_canonical_items(catalog)


def item_vectors(run: RunFolder) -> np.ndarray:
    """The item vectors the model is built on: fused with the numeric signals (`fuse`), or the fine-tuned
    text vectors for a run folder written before the fusion stage existed."""
    return np.load(run.fused_embeddings if run.fused_embeddings.exists() else run.finetuned_embeddings)
