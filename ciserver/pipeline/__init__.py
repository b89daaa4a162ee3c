"""The pipeline file: its models, its loader (errors with file, line and key), and planning.

Pure: no I/O beyond the text it is given, no API, store or worker imports.
"""

from ciserver.pipeline.loader import PipelineError, load_pipeline
from ciserver.pipeline.models import Pipeline
from ciserver.pipeline.plan import PlannedJob, plan_jobs, push_skip_reason

__all__ = ["Pipeline", "PipelineError", "PlannedJob", "load_pipeline", "plan_jobs", "push_skip_reason"]
