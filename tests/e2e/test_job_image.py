"""The image a job really ran, as the job API shows it: `image: $VAR` expanded with the job's own
variables (never its secrets), what the file wrote kept beside it, and a hostile expansion still
checked by the engine's side where it is used."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from ciserver.web.session import SESSION_COOKIE
from tests.support.engine import BUSYBOX
from tests.support.git import make_repo
from tests.support.server import CiServer

# One database is enough here: the image is expanded by the worker and the API from the job's variables, not
# by a query.
ONE_DATABASE = True

SECRET_VALUE = "registry.invalid/very-secret-name"


def test_the_job_api_shows_the_expanded_image_and_what_the_file_wrote(
    ciserver: CiServer, tmp_path: Path
) -> None:
    repo_name, tag = BUSYBOX.split(":")
    pipeline = f"""\
env: {{RUN_IMAGE: {repo_name}, HOSTILE: "--privileged"}}
jobs:
  by_variable:
    image: "$RUN_IMAGE:${{TAG}}"
    env: {{TAG: {tag}}}
    script: [echo "ran on $RUN_IMAGE"]
  hostile:
    image: "${{HOSTILE}}"
    script: [echo never]
  with_secret:
    image: "${{HIDDEN}}"
    secrets: [HIDDEN]
    script: [echo never]
"""
    name = f"octo/i{uuid.uuid4().hex[:10]}"
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline})
    ciserver.add_project(name, repo)
    command = [sys.executable, "-m", "ciserver", "secret", "set", name, "HIDDEN"]
    set_secret = subprocess.run(command, env=ciserver.env, input=SECRET_VALUE, capture_output=True, text=True)
    assert set_secret.returncode == 0, set_secret.stderr
    pushed = ciserver.push_github(name, sha)
    assert pushed.status_code == 202, pushed.text
    build = ciserver.wait_build(pushed.json()["build_id"], timeout=120)
    jobs = {job["name"]: job for job in build["jobs"]}

    ran = jobs["by_variable"]
    assert ran["status"] == "success", ran
    assert (ran["image"], ran["image_declared"]) == (BUSYBOX, "$RUN_IMAGE:${TAG}")
    assert f"ran on {repo_name}" in ciserver.log(ran["id"])
    assert ciserver.http.get(f"/api/v1/jobs/{ran['id']}").json()["image"] == BUSYBOX
    # The dashboard's job page (signed in: its session cookie is the token) says the same.
    page = httpx.get(
        f"{ciserver.url}/jobs/{ran['id']}", cookies={SESSION_COOKIE: ciserver.token_for("viewer")}
    )
    assert page.status_code == 200
    assert f"<code>{BUSYBOX}</code>" in page.text and "from <code>$RUN_IMAGE:${TAG}</code>" in page.text

    hostile = jobs["hostile"]
    assert hostile["image"] == "--privileged" and hostile["status"] == "error", hostile
    assert "--privileged" in (hostile["error"] or ""), hostile  # the engine refused the name, no option

    hidden = jobs["with_secret"]  # the worker expanded the secret and the engine found no such image
    assert hidden["image"] == "${HIDDEN}" and hidden["status"] == "error", hidden
    assert "[masked]" in (hidden["error"] or ""), hidden
    assert SECRET_VALUE not in str(build)
