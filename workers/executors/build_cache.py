"""The step cache of image builds: which image a step made, by a key of everything that made it
(the image it started from, the instruction, its variables, the digest of the files it copied).

One file per key, in the folder of the build's ref (BuildCache.write), read there and then in the
default branch's: a branch never writes a step another ref reads. An entry counts only while its
image is still on the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any

import docker
from docker.errors import ImageNotFound

from workers.executors.base import BuildCache


def step_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StepCache:
    def __init__(self, client: docker.DockerClient, folders: BuildCache | None) -> None:
        self.client, self.folders = client, folders

    def get(self, key: str) -> str | None:
        """The image of the step with this key, if a readable folder has one the engine still holds."""
        for folder in self.folders.read if self.folders else ():
            with contextlib.suppress(OSError, ImageNotFound):
                image = (folder / key).read_text().strip()
                self.client.api.inspect_image(image)
                return image
        return None

    def put(self, key: str, image: str) -> None:
        """Record the step's image in the ref's own folder (whole or not at all)."""
        folder = self.folders.write if self.folders else None
        if folder is None:
            return
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                out.write(image)
            os.replace(temporary, folder / key)
