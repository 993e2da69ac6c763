"""What a run was trained from, as MLflow inputs: its training and test data as dataset inputs, each with the digest
of exactly the images it used (``atlib.data.Source.digest``), and its teacher as a model input, the teacher run's
logged model, tagged with its checkpoint's SHA-256.

MLflow keeps a dataset once per experiment by (name, digest), so runs on the same images share one and the
experiment's runs list can show and filter by it; a logged model links the student to the run that trained its
teacher (the teacher run lists it among its outputs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .store import _store_lock

DIGEST_CHARS = 16  # of the SHA-256 in hex: MLflow keeps a digest of 36 characters at most; the profile holds it whole
CONTEXT = "mlflow.data.context"  # the input tag MLflow's UI shows beside a dataset: what the run used it for
TEACHER_SHA = "checkpoint_sha256"  # the tag of a teacher's logged model


@dataclass(frozen=True)
class Lineage:
    """A run's data (split -> SHA-256 and number of images), the dataset's keys, and its teacher's MLflow run id,
    checkpoint SHA-256 and model (its slug), if it has a teacher."""

    dataset: Mapping[str, Any]
    data: Mapping[str, tuple[str, int]]
    teacher_run: str | None = None
    teacher_sha256: str | None = None
    teacher_model: str | None = None

    def datasets(self) -> list[Any]:
        """One MLflow DatasetInput per split, named ``<dataset>-<split>``."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        out = []
        for split, (sha256, images) in self.data.items():
            source = json.dumps({"dataset": dict(self.dataset), "split": split}, default=str)  # a root may be a Path
            dataset = Dataset(name=f"{self.dataset.get('name', 'data')}-{split}", digest=sha256[:DIGEST_CHARS],
                              source_type="atlib", source=source,
                              profile=json.dumps({"num_rows": images, "sha256": sha256}))
            out.append(DatasetInput(dataset, [InputTag(CONTEXT, split)]))
        return out


def teacher_model(client: Any, uri: str, lineage: Lineage) -> str | None:
    """The id of the teacher run's logged model of this checkpoint: found, or created (READY, and logged as the
    teacher run's output) by the first student that asks. None without a teacher, or when its run is not in this
    store."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.exceptions import MlflowException

    if not (lineage.teacher_run and lineage.teacher_sha256):
        return None
    try:
        experiment = client.get_run(lineage.teacher_run).info.experiment_id
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # the teacher tracked elsewhere: its tags still name it
            return None
        raise
    with _store_lock(uri):  # students of one teacher start together: one of them creates its model
        found = [m for m in client.search_logged_models([experiment],
                                                        filter_string=f"source_run_id = '{lineage.teacher_run}'")
                 if m.tags.get(TEACHER_SHA) == lineage.teacher_sha256]
        if found:
            return min(found, key=lambda m: m.creation_timestamp).model_id
        model = client.create_logged_model(experiment, name=lineage.teacher_model or "teacher",
                                           source_run_id=lineage.teacher_run,
                                           tags={TEACHER_SHA: lineage.teacher_sha256})
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.log_outputs(lineage.teacher_run, [LoggedModelOutput(model.model_id, 0)])
        return model.model_id


def log_lineage(client: Any, uri: str, run_id: str, lineage: Lineage) -> None:
    """Log the run's data and teacher as its inputs; logging them again adds nothing (MLflow keeps an input once)."""
    from mlflow.entities import LoggedModelInput

    model = teacher_model(client, uri, lineage)
    client.log_inputs(run_id, datasets=lineage.datasets(), models=[LoggedModelInput(model)] if model else None)
