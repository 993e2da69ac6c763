"""MLflow tracking: the only package that imports mlflow (imported lazily: it costs ~1.5 s).

Runs are found in the UI by experiment (one per dataset, or ``atlib`` for single runs), by name
(:func:`run_name`: method, seed, student←teacher, recipe) and by tags: role, dataset, model, method,
variant, seed, table, row, teacher_run and teacher_sha256; the run id is the ``run`` tag. One summary
run per config and table (:func:`log_summaries`) holds the table's medians and links its cells' runs.

Tracking never stops training: a run retries each MLflow call for a bounded window and then goes on
without MLflow; ``sync_run`` later completes its MLflow run from the run's metrics.json.

One module per concern, each importing only those before it here: ``ui`` (the store's address and the UI's
pages), ``names`` (a run's name, description, tags and parameters), ``store`` (opening the store, its
experiments, retries), ``lineage`` (the data and teacher a run was trained from, as MLflow inputs), ``live`` (the
tracker of a training run), ``sync`` (completing runs from metrics.json) and ``summary`` (a run per table).
"""

from .lineage import Lineage
from .live import NullTracker, Tracker
from .names import MAX_TAG, NOTE, run_name, run_note, standard_tags
from .store import (
    ARTIFACTS,
    BUSY_SECONDS,
    PERMANENT,
    RETRY_ENV,
    RETRY_SECONDS,
    _client,
    ensure_experiments,
    retry,
    retry_seconds,
    tag_runs,
)
from .summary import log_summaries, metric_key, summary_experiment, summary_metrics
from .sync import sync_run, sync_runs
from .ui import (
    DEFAULT_STORE,
    EXPERIMENT_KIND,
    GROUPED_NAME,
    GROUPED_STATE,
    GROUPED_VIEW,
    RANKED_NAME,
    RANKED_STATE,
    RANKED_VIEW,
    SUMMARY_SUFFIX,
    UI,
    UI_VIEW,
    VIEW_TAG,
    VIEWS,
    atlib_command,
    browse_hint,
    ensure_views,
    grouped_url,
    ranked_url,
    ranked_view,
    saved_view,
    tracking_uri,
    ui_base,
    ui_url,
    view_url,
)

__all__ = [
    "ARTIFACTS", "BUSY_SECONDS", "DEFAULT_STORE", "EXPERIMENT_KIND", "GROUPED_NAME", "GROUPED_STATE", "GROUPED_VIEW",
    "MAX_TAG", "NOTE", "PERMANENT", "RANKED_NAME", "RANKED_STATE", "RANKED_VIEW", "RETRY_ENV", "RETRY_SECONDS",
    "SUMMARY_SUFFIX", "UI", "UI_VIEW", "VIEWS", "VIEW_TAG", "Lineage", "NullTracker", "Tracker", "_client",
    "atlib_command", "browse_hint", "ensure_experiments", "ensure_views", "grouped_url", "log_summaries",
    "metric_key", "ranked_url", "ranked_view", "retry", "retry_seconds", "run_name", "run_note", "saved_view",
    "standard_tags", "summary_experiment", "summary_metrics", "sync_run", "sync_runs", "tag_runs", "tracking_uri",
    "ui_base", "ui_url", "view_url",
]
