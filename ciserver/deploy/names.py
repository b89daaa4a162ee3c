"""The one name of a project's environment outside the database: its nginx file and access log, its
containers and network on the engine, its retire task on the queue.

Readable (`acme-shop-prod-eu-…`) and unambiguous: the slug alone is not (`acme/shop` + `prod-eu` and
`acme-shop/prod` + `eu` share it), so a digest of the exact project and environment ends it.
"""

from __future__ import annotations

import hashlib
import re

SLUG_MAX = 80  # the readable part; the digest after it is what tells environments apart
DIGEST_HEX = 16  # 64 bits: finding a second project and environment with a given digest is out of reach


def deploy_name(project: str, environment: str) -> str:
    """OWNER-NAME-ENV-DIGEST: lowercase letters, digits, '-' and '_', safe in file and Docker names."""
    slug = re.sub(r"[^a-z0-9_]+", "-", f"{project}-{environment}".lower()).strip("-_")
    digest = hashlib.sha256(f"{project}\n{environment}".encode()).hexdigest()[:DIGEST_HEX]
    return f"{slug[:SLUG_MAX].rstrip('-_')}-{digest}"


def legacy_route_name(project: str, environment: str) -> str:
    """The nginx name earlier releases gave an environment (ambiguous), so that its file is replaced."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", project.lower()).strip("-")
    return f"{slug}-{environment}"[:200]
