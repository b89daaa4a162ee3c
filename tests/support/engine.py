"""The Docker Engine as the tests find it: the test images scripts/build-test-images makes, and the
containers a job leaves."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUSYBOX = "ciserver-test/busybox:latest"
PYTHON = "ciserver-test/python:3.11"


def containers_of_job(job_id: int, data_dir: Path) -> list[str]:
    """Containers labelled with this job of this data dir (job ids repeat across test servers)."""
    filters = ["--filter", f"label=ciserver.job={job_id}", "--filter", f"label=ciserver.data_dir={data_dir}"]
    return subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True).stdout.split()
