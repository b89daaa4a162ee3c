"""What a job finds in its environment: the file's variables, those a manual run or a schedule gave
over them, and the CI_* ones over both, so no variable given at a run can pass for the server's."""

from __future__ import annotations

from ciserver.job_variables import job_variables
from ciserver.states import BuildSource
from ciserver.store.models import Build, Job, Project


def job_of(source: BuildSource, variables: dict[str, str] | None, env: dict[str, str]) -> Job:
    project = Project(name="acme/app", forge="github", repo_url="https://example.invalid/a.git", secret="s")
    build = Build(
        id=7, project=project, ref="refs/heads/main", branch="main", tag=None, sha="a" * 40,
        source=source, variables=variables,
    )  # fmt: skip
    return Job(id=3, build=build, name="unit", stage="test", image="busybox", env=env, attempt=1)


def test_a_push_says_so_and_keeps_the_files_variables() -> None:
    variables = job_variables(job_of(BuildSource.push, None, {"MODE": "file"}))
    assert variables["CI_PIPELINE_SOURCE"] == "push"
    assert variables["MODE"] == "file"


def test_a_manual_runs_variables_override_the_files_but_never_a_ci_variable() -> None:
    given = {"MODE": "given", "TARGET": "eu", "CI_COMMIT_SHA": "b" * 40, "CI_PIPELINE_SOURCE": "push"}
    variables = job_variables(job_of(BuildSource.manual, given, {"MODE": "file", "KEPT": "yes"}))
    assert (variables["MODE"], variables["TARGET"], variables["KEPT"]) == ("given", "eu", "yes")
    assert variables["CI_COMMIT_SHA"] == "a" * 40
    assert variables["CI_PIPELINE_SOURCE"] == "manual"
