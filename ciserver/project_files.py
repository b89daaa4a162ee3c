"""The bytes a removed project leaves outside the database: its job logs and artifacts in the data dir
(or, with CISERVER_BLOB_STORE=database, its artifacts' blobs), removed after the rows are gone.

After the commit, never before: a removal that was rolled back must find its files. A file that
cannot be removed is logged and left; nothing points at it any more.
"""

from __future__ import annotations

import logging

from ciserver.config import Settings
from ciserver.logs import FileLogStore
from ciserver.storage import artifact_store
from ciserver.store.project_removal import Removed

log = logging.getLogger(__name__)


def forget_project_files(settings: Settings, removed: Removed) -> None:
    """Remove the logs and artifacts of a project whose rows `remove_project` deleted."""
    artifacts = artifact_store(settings)
    for key in removed.artifact_keys:
        try:
            artifacts.delete(key)
        except Exception as exc:
            log.warning("project removal: artifact %s left in the store: %s", key, exc)
    if settings.blob_store == "files":  # in the database, the logs went with the rows
        logs = FileLogStore(settings.logs_dir)
        for job_id in removed.job_ids:
            try:
                logs.path(job_id).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("project removal: the log of job %s left on disk: %s", job_id, exc)
