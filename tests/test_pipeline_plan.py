"""Which pushes are built (on.push, read as GitHub Actions reads it), and the order, settings and
dependencies of the planned jobs."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ciserver.pipeline import (
    Artifacts,
    Cache,
    HashFiles,
    ImageBuild,
    PipelineError,
    PlannedJob,
    Resources,
    Retry,
    Service,
    cache_key_parts,
    load_pipeline,
    plan_jobs,
    push_skip_reason,
)
from ciserver.pipeline.globs import glob_match, matches

PIPELINE = """\
image: base
env: {A: top, B: 1}
stages: [lint, test, build, deploy]
jobs:
  style: {stage: lint, script: [a]}
  unit: {stage: test, script: [b], env: {A: job, C: true}, timeout: 2m}
  integration: {stage: test, script: c, image: other}
  package: {stage: build, script: [d, e]}
"""


def test_jobs_are_planned_in_stage_order_each_after_every_job_of_the_earlier_stages() -> None:
    plan = plan_jobs(load_pipeline(PIPELINE))
    assert [(job.name, job.stage, job.after) for job in plan] == [
        ("style", "lint", ()),
        ("unit", "test", ("style",)),
        ("integration", "test", ("style",)),
        ("package", "build", ("style", "unit", "integration")),
    ]


def test_stage_order_wins_over_file_order_and_file_order_orders_a_stage() -> None:
    text = "image: x\nstages: [a, b]\njobs:\n  z: {stage: b, script: [x]}\n  y: {stage: a, script: [x]}\n"
    text += "  x: {stage: b, script: [x]}\n  w: {stage: a, script: [x]}\n"
    assert [(job.name, job.after) for job in plan_jobs(load_pipeline(text))] == [
        ("y", ()),
        ("w", ()),
        ("z", ("y", "w")),
        ("x", ("y", "w")),
    ]


def test_a_job_takes_the_top_level_image_env_and_the_default_timeout_unless_it_sets_its_own() -> None:
    unit, integration = plan_jobs(load_pipeline(PIPELINE), default_timeout=1234)[1:3]
    assert unit == PlannedJob(
        name="unit",
        stage="test",
        image="base",
        script=["b"],
        env={"A": "job", "B": "1", "C": "true"},
        timeout=120,
        after=("style",),
    )
    assert (integration.image, integration.script, integration.env, integration.timeout) == (
        "other",
        ["c"],
        {"A": "top", "B": "1"},
        1234,
    )


def test_the_default_timeout_is_an_hour() -> None:
    assert plan_jobs(load_pipeline(PIPELINE))[0].timeout == 3600


def test_jobs_without_a_stage_go_to_the_first_and_empty_stages_are_passed_over() -> None:
    text = (
        "image: x\nstages: [one, two, three]\njobs:\n  a: {script: [x]}\n  c: {stage: three, script: [x]}\n"
    )
    plan = plan_jobs(load_pipeline(text))
    assert [(job.name, job.stage, job.after) for job in plan] == [("a", "one", ()), ("c", "three", ("a",))]


def test_without_stages_every_job_is_in_test_and_none_waits() -> None:
    plan = plan_jobs(load_pipeline("image: x\njobs:\n  a: {script: [x]}\n  b: {script: [y]}\n"))
    assert [(job.name, job.stage, job.after) for job in plan] == [("a", "test", ()), ("b", "test", ())]


def test_a_plan_does_not_share_lists_or_dicts_with_the_pipeline() -> None:
    pipeline = load_pipeline(PIPELINE)
    first = plan_jobs(pipeline)[1]
    first.script.append("more")
    first.env["A"] = "changed"
    again = plan_jobs(pipeline)[1]
    assert (again.script, again.env["A"]) == (["b"], "job")


def pipeline_with(push: str) -> str:
    return f"on:\n  push:\n{push}image: x\njobs:\n  a: {{script: [x]}}\n"


@pytest.mark.parametrize(
    ("push", "branch", "tag", "files", "built"),
    [
        # No filters: every branch and tag.
        ("", "anything/at/all", None, None, True),
        ("", None, "v1", ["docs/x"], True),
        # Branches: `*` stays within a segment, `**` crosses them.
        ("    branches: [main, 'release/*']\n", "main", None, None, True),
        ("    branches: [main, 'release/*']\n", "release/1.0", None, None, True),
        ("    branches: [main, 'release/*']\n", "release/1.0/hotfix", None, None, False),
        ("    branches: [main, 'release/*']\n", "mainline", None, None, False),
        ("    branches: ['release/**']\n", "release/1.0/hotfix", None, None, True),
        ("    branches: ['**', '!dependabot/**']\n", "dependabot/npm/x", None, None, False),
        ("    branches: ['**', '!dependabot/**']\n", "feature/x", None, None, True),
        ("    branches: [main]\n", "dev", None, None, False),
        # Naming branches only leaves tags out, and the other way round.
        ("    branches: [main]\n", None, "v1.0", None, False),
        ("    tags: ['v*']\n", None, "v1.0", None, True),
        ("    tags: ['v*']\n", None, "nightly", None, False),
        ("    tags: ['v*']\n", "main", None, None, False),
        ("    tags: ['v[0-9]+.[0-9]+']\n", None, "v1.10", None, True),
        ("    tags: ['v[0-9]+.[0-9]+']\n", None, "v1.x", None, False),
        ("    branches: [main]\n    tags: ['v*']\n", None, "v2", None, True),
        ("    branches: [main]\n    tags: ['v*']\n", "main", None, None, True),
        ("    branches: [main]\n", None, None, None, False),
        # Paths: build when a changed file matches; unknown changes never skip.
        ("    paths: ['src/**']\n", "main", None, ["README", "src/a/b.py"], True),
        ("    paths: ['src/**']\n", "main", None, ["docs/x.md"], False),
        ("    paths: ['src/**']\n", "main", None, None, True),
        ("    paths: ['src/**']\n", "main", None, [], False),
        ("    paths: ['*.py']\n", "main", None, ["pkg/a.py"], False),
        ("    paths: ['**.py']\n", "main", None, ["pkg/a.py"], True),
        ("    paths: ['src/**', '!src/**.md']\n", "main", None, ["src/notes.md"], False),
        # paths_ignore: skip when every changed file matches.
        ("    paths_ignore: ['docs/**', '**/*.md']\n", "main", None, ["docs/a.txt", "README.md"], False),
        ("    paths_ignore: ['docs/**']\n", "main", None, ["docs/a.txt", "src/x.py"], True),
        ("    paths_ignore: ['docs/**']\n", "main", None, None, True),
        # Both: a changed file counts when it matches paths and not paths_ignore.
        ("    paths: ['src/**']\n    paths_ignore: ['**.md']\n", "main", None, ["src/a.md", "b.py"], False),
        (
            "    paths: ['src/**']\n    paths_ignore: ['**.md']\n",
            "main",
            None,
            ["src/a.md", "src/b.py"],
            True,
        ),
        # Path filters are not applied to tag pushes.
        ("    tags: ['v*']\n    paths: ['src/**']\n", None, "v1", ["docs/x"], True),
    ],
)
def test_push_filters_decide_which_pushes_are_built(
    push: str, branch: str | None, tag: str | None, files: list[str] | None, built: bool
) -> None:
    pipeline = load_pipeline(pipeline_with(push) if push else "image: x\njobs:\n  a: {script: [x]}\n")
    reason = push_skip_reason(pipeline, branch=branch, tag=tag, changed_files=files)
    assert (reason is None) == built, reason


@pytest.mark.parametrize("on", ["on:\n", "on: {}\n", "on: {push: }\n", "on: {push: {}}\n"])
def test_an_empty_on_builds_every_push(on: str) -> None:
    pipeline = load_pipeline(on + "image: x\njobs:\n  a: {script: [x]}\n")
    assert push_skip_reason(pipeline, branch="any", tag=None, changed_files=[]) is None
    assert push_skip_reason(pipeline, branch=None, tag="v1", changed_files=None) is None


@pytest.mark.parametrize(
    ("push", "branch", "tag", "files", "reason"),
    [
        (
            "    branches: [main, 'release/*']\n",
            "dev",
            None,
            None,
            "branch 'dev' is not in on.push.branches [main, release/*]",
        ),
        ("    tags: ['v*']\n", None, "nightly", None, "tag 'nightly' is not in on.push.tags [v*]"),
        (
            "    tags: ['v*']\n",
            "main",
            None,
            None,
            "branch 'main' is not built: on.push names tags [v*] and no branches",
        ),
        (
            "    branches: [main]\n",
            None,
            "v1",
            None,
            "tag 'v1' is not built: on.push names branches [main] and no tags",
        ),
        (
            "    paths: ['src/**']\n",
            "main",
            None,
            ["docs/a"],
            "no changed file matches on.push.paths [src/**]",
        ),
        (
            "    paths_ignore: ['docs/**']\n",
            "main",
            None,
            ["docs/a"],
            "every changed file matches on.push.paths_ignore [docs/**]",
        ),
        (
            "    paths: ['src/**']\n    paths_ignore: ['**.md']\n",
            "main",
            None,
            ["src/a.md"],
            "no changed file matches on.push.paths [src/**] outside on.push.paths_ignore [**.md]",
        ),
        (
            "    paths: ['src/**']\n",
            "main",
            None,
            [],
            "the push changed no files, and on.push filters by paths",
        ),
    ],
)
def test_a_skip_reason_names_what_was_pushed_and_the_filter(
    push: str, branch: str | None, tag: str | None, files: list[str] | None, reason: str
) -> None:
    pipeline = load_pipeline(pipeline_with(push))
    assert push_skip_reason(pipeline, branch=branch, tag=tag, changed_files=files) == reason


@pytest.mark.parametrize(
    ("pattern", "text", "matched"),
    [
        ("main", "main", True),
        ("main", "main2", False),
        ("*", "main", True),
        ("*", "feature/x", False),
        ("*", "", True),
        ("**", "feature/x/y", True),
        ("feature/*", "feature/x", True),
        ("feature/*", "feature/x/y", False),
        ("feature/**", "feature/x/y", True),
        ("feature/**", "feature", False),
        ("*.js", "app.js", True),
        ("*.js", "src/app.js", False),
        ("**.js", "src/deep/app.js", True),
        ("**/*.md", "README.md", True),
        ("**/*.md", "docs/a/README.md", True),
        ("docs/**/*.md", "docs/a.md", True),
        ("**/migrate-*.sql", "db/sept/migrate-v1.sql", True),
        ("v2*", "v2.0", True),
        ("v1.?", "v1", True),  # `?`: the character before it is optional
        ("v1.?", "v1.", True),
        ("v1.?", "v1.2", False),
        ("v[12].[0-9]+.[0-9]+", "v1.10.1", True),
        ("v[12].[0-9]+.[0-9]+", "v3.0.0", False),
        ("v[12].[0-9]+.[0-9]+", "v1..1", False),
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("+a", "+a", True),
        ("[", "[", True),
    ],
)
def test_globs_read_as_github_filter_patterns(pattern: str, text: str, matched: bool) -> None:
    assert glob_match(pattern, text) is matched


@pytest.mark.parametrize(
    ("patterns", "text", "matched"),
    [
        (["**", "!dev"], "dev", False),
        (["**", "!dev"], "main", True),
        (["**", "!release/*", "release/keep"], "release/keep", True),
        (["!dev", "**"], "dev", True),
        ([], "main", False),
    ],
)
def test_a_later_negated_pattern_takes_back_an_earlier_match(
    patterns: list[str], text: str, matched: bool
) -> None:
    assert matches(patterns, text) is matched


def test_a_pathological_pattern_is_decided_quickly() -> None:
    started = time.perf_counter()
    assert not glob_match("*a" * 100 + "b", "a" * 2000)
    assert not glob_match("a+" * 100 + "b", "a" * 2000)
    assert time.perf_counter() - started < 2


DAG = """\
image: base
stages: [build, test, deploy]
jobs:
  compile: {stage: build, script: [a]}
  docs: {stage: build, script: [b]}
  unit:
    stage: test
    needs: [compile]
    matrix: {PY: ["3.10", "3.11"], DB: [sqlite, pg]}
    env: {PY: overridden}
    script: [c]
  lint: {stage: test, needs: [], script: [d]}
  ship:
    stage: deploy
    needs: [unit]
    only: {branches: [main]}
    script: [e]
  docs-site:
    stage: deploy
    only: {paths: ["docs/**"]}
    except: {branches: ["wip/*"]}
    script: [f]
"""


def planned(text: str = DAG, **push: object) -> dict[str, PlannedJob]:
    return {job.name: job for job in plan_jobs(load_pipeline(text), **push)}  # type: ignore[arg-type]


def test_a_matrix_expands_into_one_job_per_combination_with_its_variables() -> None:
    jobs = planned(branch="main", changed_files=None)
    variants = [name for name in jobs if name.startswith("unit")]
    assert variants == [
        "unit [PY=3.10, DB=sqlite]",
        "unit [PY=3.10, DB=pg]",
        "unit [PY=3.11, DB=sqlite]",
        "unit [PY=3.11, DB=pg]",
    ]
    assert jobs["unit [PY=3.11, DB=pg]"].env == {"PY": "3.11", "DB": "pg"}


def test_needs_name_the_jobs_that_end_first_and_a_matrix_name_means_every_variant() -> None:
    jobs = planned(branch="main", changed_files=None)
    assert jobs["unit [PY=3.10, DB=sqlite]"].after == ("compile",)
    assert jobs["lint"].after == ()
    assert len(jobs["ship"].after) == 4 and all(name.startswith("unit [") for name in jobs["ship"].after)
    assert jobs["docs-site"].after == tuple(name for name in jobs if name not in ("ship", "docs-site"))


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        ({"branch": "main", "changed_files": ["src/a.py"]}, {"ship"}),
        ({"branch": "main", "changed_files": ["docs/index.md"]}, {"ship", "docs-site"}),
        ({"branch": "main", "changed_files": None}, {"ship", "docs-site"}),
        ({"branch": "wip/x", "changed_files": ["docs/index.md"]}, set()),
        ({"branch": "dev", "changed_files": ["docs/index.md"]}, {"docs-site"}),
        ({"tag": "v1", "changed_files": None}, {"docs-site"}),
    ],
)
def test_only_and_except_pick_the_jobs_a_push_runs(push: dict[str, object], expected: set[str]) -> None:
    assert {"ship", "docs-site"} & set(planned(**push)) == expected


def test_a_need_on_a_job_the_rules_left_out_is_dropped() -> None:
    text = DAG.replace("needs: [unit]", "needs: [unit, docs-site]")
    assert len(planned(text, branch="main", changed_files=["src/a.py"])["ship"].after) == 4


def test_a_matrix_of_two_by_two_is_four_jobs_named_and_set_in_product_order() -> None:
    text = """\
image: base
env: {TOP: t, DB: from-top}
jobs:
  unit:
    script: [pytest]
    env: {DB: from-job, OWN: o}
    matrix: {PYTHON: ["3.10", "3.11"], DB: [sqlite, postgres]}
"""
    plan = plan_jobs(load_pipeline(text))
    assert [job.name for job in plan] == [
        "unit [PYTHON=3.10, DB=sqlite]",
        "unit [PYTHON=3.10, DB=postgres]",
        "unit [PYTHON=3.11, DB=sqlite]",
        "unit [PYTHON=3.11, DB=postgres]",
    ]
    assert plan[1].env == {"TOP": "t", "DB": "postgres", "OWN": "o", "PYTHON": "3.10"}
    assert {job.script[0] for job in plan} == {"pytest"} and {job.stage for job in plan} == {"test"}


STAGES = """\
image: base
stages: [lint, test, build, deploy]
jobs:
  style: {stage: lint, script: [a]}
  unit: {stage: test, script: [b], matrix: {N: [1, 2]}}
  package: {stage: build, script: [c]}
  ship: {stage: deploy, script: [d]}
  early: {stage: deploy, script: [e], needs: [style]}
  now: {stage: deploy, script: [f], needs: []}
"""


def test_without_needs_a_job_waits_for_every_planned_job_of_every_earlier_stage() -> None:
    jobs = planned(STAGES)
    assert jobs["ship"].after == ("style", "unit [N=1]", "unit [N=2]", "package")
    assert jobs["package"].after == ("style", "unit [N=1]", "unit [N=2]")
    assert jobs["unit [N=2]"].after == ("style",)


def test_with_needs_a_job_waits_for_those_only_even_across_stages() -> None:
    jobs = planned(STAGES)
    assert (jobs["early"].after, jobs["now"].after) == (("style",), ())
    assert [job.name for job in plan_jobs(load_pipeline(STAGES))][-3:] == ["ship", "early", "now"]


def test_a_job_whose_needs_were_all_left_out_starts_at_once() -> None:
    text = STAGES.replace("style: {stage: lint,", "style: {stage: lint, only: {branches: [main]},")
    assert planned(text, branch="dev")["early"].after == ()
    assert planned(text, branch="dev")["ship"].after == ("unit [N=1]", "unit [N=2]", "package")


RULES = "image: x\njobs:\n  a:\n    script: [x]\n"


@pytest.mark.parametrize(
    ("rules", "push", "runs"),
    [
        ("only: {branches: [main]}", {"branch": "main"}, True),
        ("only: {branches: [main]}", {"branch": "dev"}, False),
        ("only: {branches: [main]}", {"tag": "v1"}, False),
        ("only: {tags: ['v*']}", {"tag": "v1"}, True),
        ("only: {tags: ['v*']}", {"branch": "main"}, False),
        ("only: {branches: [main], tags: ['v*']}", {"tag": "v2"}, True),
        ("only: {branches: [main], tags: ['v*']}", {"branch": "main"}, True),
        ("only: {branches: ['**', '!wip/**']}", {"branch": "wip/x"}, False),
        ("only: {paths: ['src/**']}", {"branch": "main", "changed_files": ["src/a.py"]}, True),
        ("only: {paths: ['src/**']}", {"branch": "main", "changed_files": ["docs/a.md"]}, False),
        ("only: {paths: ['src/**']}", {"branch": "main", "changed_files": []}, False),
        ("only: {paths: ['src/**']}", {"branch": "main", "changed_files": None}, True),
        ("only: {branches: [main], paths: ['src/**']}", {"branch": "main", "changed_files": ["x"]}, False),
        ("only: {branches: [main], paths: ['src/**']}", {"branch": "dev", "changed_files": None}, False),
        ("only: {}", {"branch": "any"}, True),
        ("except: {branches: ['wip/*']}", {"branch": "wip/x"}, False),
        ("except: {branches: ['wip/*']}", {"branch": "main"}, True),
        ("except: {branches: ['wip/*']}", {"tag": "wip/x"}, True),
        ("except: {tags: ['*-rc*']}", {"tag": "v1-rc1"}, False),
        ("except: {paths: ['docs/**']}", {"branch": "main", "changed_files": ["docs/a", "src/b"]}, False),
        ("except: {paths: ['docs/**']}", {"branch": "main", "changed_files": ["src/b"]}, True),
        ("except: {paths: ['docs/**']}", {"branch": "main", "changed_files": None}, True),
        ("only: {branches: [main]}\n    except: {paths: ['docs/**']}",
         {"branch": "main", "changed_files": ["docs/x"]}, False),
    ],
)  # fmt: skip
def test_only_and_except_decide_whether_a_job_is_planned(
    rules: str, push: dict[str, object], runs: bool
) -> None:
    assert bool(planned(RULES + "    " + rules + "\n", **push)) is runs


def test_an_image_build_job_has_no_image_and_no_script_unless_it_names_an_image() -> None:
    text = "image: base\njobs:\n  build: {image_build: {}}\n  tools: {image_build: {}, image: helper}\n"
    jobs = planned(text)
    assert (jobs["build"].image, jobs["build"].script) == ("", [])
    assert jobs["tools"].image == "helper"
    assert jobs["build"].options.stored() == {
        "image_build": {"context": ".", "dockerfile": "Dockerfile", "build_args": {}}
    }


OPTIONS = """\
image: base
jobs:
  a:
    script: [x]
    services:
      - image: "reg:5000/team/db:15"
        env: {P: 1}
        command: db --fast
      - {image: cache, alias: kv}
    artifacts: {paths: [dist/], expire_in: 1d}
    cache: {key: "pip-{{ hashFiles('req.txt') }}", paths: [.cache]}
    secrets: [TOKEN]
    resources: {memory: 1g, pids: 50, cpus: 0.5}
    user: nobody
    retry: 1
    when: always
    allow_failure: true
  b:
    image_build: {context: app, target: prod, build_args: {V: 2}}
    needs: []
    retry: {max: 2, when: [runner_failure]}
"""


def test_options_carry_what_the_worker_needs_and_validate_back() -> None:
    jobs = planned(OPTIONS)
    a, b = jobs["a"].options.stored(), jobs["b"].options.stored()
    assert a["services"] == [
        {"image": "reg:5000/team/db:15", "alias": "db", "env": {"P": "1"}, "command": ["db", "--fast"]},
        {"image": "cache", "alias": "kv", "env": {}},
    ]
    assert a["artifacts"] == {"paths": ["dist/"], "expire_in": 86400}
    assert a["cache"] == {"key": "pip-{{ hashFiles('req.txt') }}", "paths": [".cache"]}
    assert a["resources"] == {"memory": 1024**3, "pids": 50, "cpus": 0.5}
    assert (a["secrets"], a["user"], a["retry"]) == (["TOKEN"], "nobody", {"max": 1, "when": ["always"]})
    assert "network" not in a
    assert b == {
        "image_build": {
            "context": "app",
            "dockerfile": "Dockerfile",
            "target": "prod",
            "build_args": {"V": "2"},
        },
        "retry": {"max": 2, "when": ["runner_failure"]},
    }
    assert (jobs["a"].when, jobs["a"].allow_failure, jobs["b"].when, jobs["b"].allow_failure) == (
        "always",
        True,
        "on_success",
        False,
    )
    models = {"artifacts": Artifacts, "cache": Cache, "resources": Resources, "retry": Retry}
    for key, model in models.items():
        assert model.model_validate(a[key]).model_dump(mode="json", exclude_none=True) == a[key]
    assert [Service.model_validate(s).model_dump(mode="json", exclude_none=True) for s in a["services"]] == (
        a["services"]
    )
    assert (
        ImageBuild.model_validate(b["image_build"]).model_dump(mode="json", exclude_none=True)
        == b["image_build"]
    )
    assert cache_key_parts(Cache.model_validate(a["cache"]).key) == ["pip-", HashFiles(("req.txt",))]


def test_options_are_json_and_hold_only_what_a_job_sets() -> None:
    jobs = planned(OPTIONS)
    assert json.loads(json.dumps(jobs["a"].options.stored())) == jobs["a"].options.stored()
    offline = planned("image: x\njobs:\n  a: {script: [x], network: none}\n")["a"]
    assert offline.options.stored() == {"network": "none"}
    assert planned("image: x\njobs:\n  a: {script: [x], network: default}\n")["a"].options.stored() == {}


def test_a_retry_shorthand_plans_as_retry_always() -> None:
    assert planned(RULES + "    retry: 3\n")["a"].options.stored() == {
        "retry": {"max": 3, "when": ["always"]}
    }
    assert planned(RULES + "    retry: 0\n")["a"].options.stored() == {
        "retry": {"max": 0, "when": ["always"]}
    }


job_keys = st.fixed_dictionaries(
    {"script": st.just(["x"])},
    optional={
        "stage": st.sampled_from(["one", "two", "three"]),
        "needs": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2, unique=True),
        "matrix": st.dictionaries(
            st.sampled_from(["A", "B"]),
            st.lists(st.sampled_from([1, 2, "x"]), min_size=1, max_size=2),
            max_size=2,
        ),
        "only": st.fixed_dictionaries(
            {}, optional={"branches": st.just(["main"]), "paths": st.just(["src/**"])}
        ),
        "except": st.fixed_dictionaries(
            {}, optional={"tags": st.just(["v*"]), "paths": st.just(["docs/**"])}
        ),
        "when": st.sampled_from(["on_success", "manual"]),
        "retry": st.sampled_from([0, 2, {"max": 1}]),
    },
)
graphs = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), job_keys, min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    graphs,
    st.sampled_from([{"branch": "main"}, {"branch": "dev"}, {"tag": "v1"}]),
    st.sampled_from([None, [], ["src/a"], ["docs/b"]]),
)
def test_a_plan_only_ever_waits_on_planned_jobs_and_never_in_a_circle(
    jobs: dict[str, object], ref: dict[str, str], changed: list[str] | None
) -> None:
    document = {"image": "x", "stages": ["one", "two", "three"], "jobs": jobs}
    try:
        pipeline = load_pipeline(yaml.safe_dump(document))
    except PipelineError:
        return
    plan = plan_jobs(pipeline, changed_files=changed, **ref)  # type: ignore[arg-type]
    names = [job.name for job in plan]
    assert len(set(names)) == len(names)
    waiting = {job.name: set(job.after) for job in plan}
    assert all(after <= waiting.keys() for after in waiting.values()), "waits only on planned jobs"
    while waiting:  # take away the jobs that wait on nothing left: a circle would never empty
        ready = {name for name, after in waiting.items() if not after}
        assert ready, f"a circle among {sorted(waiting)}"
        waiting = {name: after - ready for name, after in waiting.items() if name not in ready}


def test_a_job_environment_is_in_its_options_for_the_worker_to_check() -> None:
    job = planned("image: x\njobs:\n  a: {script: [x], environment: production, secrets: [T]}\n")["a"]
    assert job.options.stored() == {"secrets": ["T"], "environment": "production"}
    with pytest.raises(PipelineError, match=r"pipelines.yml:3: jobs.a.environment: invalid environment name"):
        load_pipeline("image: x\njobs:\n  a: {script: [x], environment: Prod}\n")


@given(
    st.text(alphabet="ab/*?+[]\\.", max_size=8),
    st.text(alphabet="ab/.?*+[]\\", max_size=8),
)
def test_the_literal_start_and_end_shortcut_never_changes_a_match(pattern: str, text: str) -> None:
    from ciserver.pipeline import globs

    steps = globs._compile(pattern)
    positions = globs._closure(steps, {0})
    for char in text:
        taken = {
            i if steps[i].repeats else i + 1 for i in positions if i < len(steps) and steps[i].takes(char)
        }
        positions = globs._closure(steps, taken)
    assert glob_match(pattern, text) is (len(steps) in positions)


def test_matching_past_the_budget_of_a_push_stops_and_treats_changed_files_as_unknown() -> None:
    from ciserver.pipeline import MatchBudget, MatchTooCostly

    pattern, text = "*a" * 80 + "b", "a" * 1000 + "/ab"  # the literal end agrees: the matcher runs whole
    with pytest.raises(MatchTooCostly):
        glob_match(pattern, text, MatchBudget(10_000))
    pipeline = load_pipeline(
        f"image: x\njobs:\n  docs:\n    script: [echo]\n    only: {{paths: ['{pattern}']}}\n"
    )
    assert plan_jobs(pipeline, branch="main", changed_files=[text] * 3000)[0].name == "docs"


def test_a_pattern_too_long_or_a_list_too_long_is_refused_at_its_line() -> None:
    long = "a" * 257
    with pytest.raises(PipelineError) as error:
        load_pipeline(f"image: x\njobs:\n  a:\n    script: [echo]\n    only:\n      paths: ['{long}']\n")
    assert str(error.value).startswith("pipelines.yml:6: jobs.a.only.paths: 'aaaa")
    assert str(error.value).endswith("is 257 characters long, over the limit of 256")
    many = ", ".join(f"b{i}" for i in range(101))
    with pytest.raises(
        PipelineError, match=r"^pipelines.yml:3: on.push.branches: 101 patterns, over the limit"
    ):
        load_pipeline(f"image: x\non:\n  push: {{branches: [{many}]}}\njobs:\n  a: {{script: [echo]}}\n")


def test_a_timeout_over_the_servers_maximum_is_refused_at_planning_naming_job_key_and_maximum() -> None:
    from ciserver.pipeline import PlanError

    pipeline = load_pipeline("image: x\njobs:\n  slow: {script: [echo], timeout: 2h}\n")
    with pytest.raises(PlanError, match=r"^jobs.slow.timeout: 2h is over this server's maximum of 1h30m"):
        plan_jobs(pipeline, branch="main", max_timeout=5400)
    assert plan_jobs(pipeline, branch="main", max_timeout=7200)[0].timeout == 7200
    defaulted = load_pipeline("image: x\njobs:\n  quick: {script: [echo]}\n")
    assert plan_jobs(defaulted, branch="main", default_timeout=3600, max_timeout=60)[0].timeout == 60
