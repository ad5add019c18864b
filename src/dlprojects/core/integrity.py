"""A model's integrity, checked before an evaluate stage does any work: the tracking server answers,
and the model folder holds bytes the pipeline made (a training run's digest, or dvc.lock's hash)."""

from __future__ import annotations

from pathlib import Path

from dlprojects.core import tracking
from dlprojects.core.errors import UserError
from dlprojects.core.lineage import dvc_folder_hash, dvc_hashes, project_root


def check_model(project: str, folder: Path) -> None:
    """Before an evaluate stage does any work: the tracking server answers (`connect`), and the
    model in `folder` is one the pipeline made: a run of experiment `project` wrote these very
    bytes, or dvc.lock records them (a model pulled from a DVC remote, its run in another store).
    A model changed after training is refused, not evaluated and registered."""
    folder = Path(folder)
    if not (folder / "model.json").is_file():
        return  # the stage's own loading says what is missing
    client = tracking.connect(project)
    if tracking.runs_of_model(client, project, folder):
        return
    root = project_root()
    recorded = dvc_hashes(root).get(folder.resolve().relative_to(root).as_posix()
                                    if folder.resolve().is_relative_to(root) else folder.as_posix())
    if recorded and recorded == dvc_folder_hash(folder):
        return
    raise UserError(f"{folder.as_posix()}: its files match no training run of '{project}' in "
                    f"{tracking.tracking_uri()} and not the hash dvc.lock records (changed after "
                    f"training?); `dvc checkout {folder.as_posix()}` restores the recorded model, "
                    f"`dvc repro --force` of its train stage makes a new one")
