"""The forges ciserver accepts webhooks from, by the name used in /webhooks/{name}.

Each forge verifies a delivery and parses it into one `WebhookEvent`; see `base.Forge`.
A new forge is one new module and one entry in FORGES.
"""

from __future__ import annotations

from ciserver.forges.base import Forge, StatusForge
from ciserver.forges.gitea import GITEA
from ciserver.forges.github import GITHUB
from ciserver.forges.gitlab import GITLAB

FORGES: dict[str, Forge] = {GITHUB.name: GITHUB, GITLAB.name: GITLAB, GITEA.name: GITEA}
STATUS_FORGES: dict[str, StatusForge] = {GITHUB.name: GITHUB, GITLAB.name: GITLAB, GITEA.name: GITEA}


def get_forge(name: str) -> Forge:
    """The forge called `name`; KeyError naming the known forges otherwise."""
    try:
        return FORGES[name]
    except KeyError:
        raise KeyError(f"unknown forge {name!r}; known: {', '.join(sorted(FORGES))}") from None


__all__ = ["FORGES", "STATUS_FORGES", "Forge", "StatusForge", "get_forge"]
