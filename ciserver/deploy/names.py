"""The one name of a project's environment outside the database: its nginx file and access log, its
retire task on the queue, and (with the installation) its containers and network on the engine; and
the tag of a project's release images.

Readable (`acme-shop-prod-eu-…`) and unambiguous: the slug alone is not (`acme/shop` + `prod-eu` and
`acme-shop/prod` + `eu` share it), so a digest of the exact project and environment ends it. A Docker
Engine may serve several installations, so names there also digest the installation's data dir.
"""

from __future__ import annotations

import hashlib
import re

SLUG_MAX = 80  # the readable part; the digest after it is what tells environments apart
DIGEST_HEX = 16  # 64 bits: finding a second project and environment with a given digest is out of reach


def deploy_name(project: str, environment: str, installation: str | None = None) -> str:
    """OWNER-NAME-ENV-DIGEST: lowercase letters, digits, '-' and '_', safe in file and Docker names.
    `installation` (a data dir) joins the digest of names other installations share (the engine's)."""
    slug = re.sub(r"[^a-z0-9_]+", "-", f"{project}-{environment}".lower()).strip("-_")
    exact = "\n".join([project, environment] + ([installation] if installation is not None else []))
    digest = hashlib.sha256(exact.encode()).hexdigest()[:DIGEST_HEX]
    return f"{slug[:SLUG_MAX].rstrip('-_')}-{digest}"


def legacy_route_name(project: str, environment: str) -> str:
    """The nginx name earlier releases gave an environment (ambiguous), so that its file is replaced."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", project.lower()).strip("-")
    return f"{slug}-{environment}"[:200]


def release_tag(project: str, sha: str, registry: str | None = None) -> str:
    """ciserver/OWNER-NAME-DIGEST:SHA, the tag of a commit's release image: Docker's characters, and a
    digest of the exact project, since `acme/shop-prod` and `acme-shop/prod` share a slug (and could
    push one commit), and a job that runs `$CI_RELEASE_IMAGE` must get its own project's image.
    With a `registry` (HOST:PORT) it is REGISTRY/ciserver/...: the name every engine pulls it by."""
    slug = re.sub(r"[^a-z0-9]+", "-", project.lower()).strip("-")[:SLUG_MAX].rstrip("-")
    digest = hashlib.sha256(project.encode()).hexdigest()[:DIGEST_HEX]
    prefix = f"{registry.strip('/')}/" if registry else ""
    return f"{prefix}ciserver/{slug}-{digest}:{sha}"
