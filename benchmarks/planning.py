#!/usr/bin/env python3
"""Planning a push whose pipeline filters jobs by changed files, measured on a worker's CPU: what a
pusher who controls both the patterns (pipelines.yml) and the changed paths (their file names) can
make a shared worker spend.

Prints a table: the cost of one glob match (ordinary and adversarial, at the longest pattern the file
accepts), and the time to plan pushes of up to 3,000 changed files (the most a forge payload is taken
with) against 100 jobs with `only.paths`. "Without a budget" is the product pairs x one match, measured
on a sample (running it whole would take hours); "with the budget" is plan_jobs as the worker runs it.
Run from the project root:

    .venv/bin/python benchmarks/planning.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ciserver.pipeline import glob_match, load_pipeline, plan_jobs
from ciserver.pipeline.fields import MAX_PATTERN_LENGTH
from ciserver.pipeline.rules import MATCH_STEPS

# A pattern that nearly matches (same start and end, one directory too deep): the matcher runs whole.
ORDINARY = ("src/*/*.py", "src/app/" + "module/" * 8 + "views{}.py")
# Every position of the pattern alive at each character, and the same literal end as the text.
ADVERSARIAL = ("*a" * (MAX_PATTERN_LENGTH // 2 - 1) + "b", "a" * 1024 + "{}/ab")
JOBS = 100


def per_match(pattern: str, text: str, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        glob_match(pattern, text)
    return (time.perf_counter() - start) / repeat


def pipeline(pattern: str) -> str:
    jobs = "".join(f"  j{i}:\n    script: [echo]\n    only: {{paths: ['{pattern}']}}\n" for i in range(JOBS))
    return f"image: busybox\njobs:\n{jobs}"


def plan_seconds(pattern: str, paths: list[str]) -> tuple[float, int]:
    planned = load_pipeline(pipeline(pattern))
    start = time.perf_counter()
    jobs = plan_jobs(planned, branch="main", changed_files=paths)
    return time.perf_counter() - start, len(jobs)


def main() -> None:
    print(f"match budget per push: {MATCH_STEPS:,} steps; longest pattern {MAX_PATTERN_LENGTH} characters\n")
    print("| case | one match | changed files | pairs | without a budget | with the budget | jobs planned |")
    print("|---|---|---|---|---|---|---|")
    for name, (pattern, path) in (("ordinary", ORDINARY), ("adversarial", ADVERSARIAL)):
        one = per_match(pattern, path.format(0), 200 if name == "ordinary" else 3)
        for files in (100, 1000, 3000):
            # Paths that match no job: every job looks at every path, the worst case for the planner.
            paths = [path.format(i) for i in range(files)]
            seconds, planned = plan_seconds(pattern, paths)
            pairs = JOBS * files
            row = (name, f"{one * 1e3:.2f} ms", f"{files:,}", f"{pairs:,}", f"{pairs * one:,.1f} s")
            print("| " + " | ".join(row) + f" | {seconds:.2f} s | {planned} |")


if __name__ == "__main__":
    main()
