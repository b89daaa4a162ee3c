"""The pipeline file: its models, its loader (errors with file, line and key), and planning.

Pure: no I/O beyond the text it is given, no API, store or worker imports. A worker reads a job
row's options back with `JobOptions.from_stored(job.options)`, and renders a cache key from
`cache_key_parts(options.cache.key)`.
"""

from ciserver.pipeline.cache_key import HashFiles, cache_key_parts, workspace_path_problem
from ciserver.pipeline.environments import (
    BlueGreen,
    Canary,
    DeployConfig,
    DeployedService,
    Environment,
    Recreate,
    Strategy,
    listens_overlap,
    normalize_listen,
)
from ciserver.pipeline.globs import MatchBudget, MatchTooCostly, glob_match, is_glob, matches
from ciserver.pipeline.loader import PipelineError, load_pipeline
from ciserver.pipeline.models import (
    Artifacts,
    Cache,
    ImageBuild,
    Job,
    Pipeline,
    Resources,
    Retry,
    Rules,
    Service,
    matrix_variants,
)
from ciserver.pipeline.options import JobOptions, OptionsError
from ciserver.pipeline.plan import PlanError, PlannedJob, plan_jobs
from ciserver.pipeline.rules import accepted_refs, accepts_release, job_runs, push_skip_reason
from ciserver.pipeline.schema import pipeline_json_schema

__all__ = [
    "Artifacts",
    "BlueGreen",
    "Cache",
    "Canary",
    "DeployConfig",
    "DeployedService",
    "Environment",
    "HashFiles",
    "ImageBuild",
    "Job",
    "JobOptions",
    "MatchBudget",
    "MatchTooCostly",
    "OptionsError",
    "Pipeline",
    "PipelineError",
    "PlanError",
    "PlannedJob",
    "Recreate",
    "Resources",
    "Retry",
    "Rules",
    "Service",
    "Strategy",
    "accepted_refs",
    "accepts_release",
    "cache_key_parts",
    "glob_match",
    "is_glob",
    "job_runs",
    "listens_overlap",
    "load_pipeline",
    "matches",
    "matrix_variants",
    "normalize_listen",
    "pipeline_json_schema",
    "plan_jobs",
    "push_skip_reason",
    "workspace_path_problem",
]
