"""Where a run's data came from, in MLflow's own terms: each training run gets its train,
validation and test inputs (`mlflow.log_input`), named, with the DVC path as source, the DVC hash
as digest and the row count as profile, so the UI's Datasets column shows them; and each project's
experiment is marked as model training (`mlflow.experimentKind`), so the UI opens on its runs.

The evaluate stage logs them into the training run it reopens: it reads the same splits."""

from __future__ import annotations

import json
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

from dlprojects.core.lineage import dvc_hashes, project_root

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}


class DvcSource(DatasetSource):
    """A path of the project that DVC tracks, at the hash dvc.lock records for it."""

    def __init__(self, path: str, md5: str):
        self.path, self.md5 = path, md5

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, **kwargs) -> str:
        """The local path: `dvc checkout` (or `dvc pull`) puts the recorded version there."""
        return self.path

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcSource:
        raise NotImplementedError("name the DVC path and hash: DvcSource(path, md5)")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "md5": self.md5}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcSource:
        return cls(source_dict["path"], source_dict["md5"])


class DvcDataset(MetaDataset):
    """A split of a DVC-tracked data set: no data, only where it is, its hash and its rows."""

    def __init__(self, source: DvcSource, name: str, rows: int):
        self.rows = rows
        super().__init__(source=source, name=name, digest=source.md5 or None)

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self.rows}

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def log_splits(data_path: str, name: str, rows: dict[str, int]) -> None:
    """Log each split ("train", "validation", "test": row count) of the DVC-tracked `data_path`
    as an input of the active run, named "<name>-<split>", and mark the run's experiment as
    model training."""
    import mlflow

    md5 = dvc_hashes(project_root()).get(data_path, "")
    source = DvcSource(data_path, md5)
    for split, count in rows.items():
        mlflow.log_input(DvcDataset(source, f"{name}-{split}", count), context=CONTEXTS[split])
    run = mlflow.active_run()
    mlflow.MlflowClient().set_experiment_tag(run.info.experiment_id, *EXPERIMENT_KIND)
