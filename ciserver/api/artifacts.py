"""Artifacts: list a build's, download one."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response, StreamingResponse

from ciserver.api.deps import DatabaseDep, RowId, SettingsDep, Viewer, not_found
from ciserver.api.schemas import ArtifactOut
from ciserver.storage import artifact_store
from ciserver.store.artifacts import artifacts_of_build, get_artifact
from ciserver.store.builds import get_build

router = APIRouter(prefix="/api/v1", tags=["artifacts"])


@router.get("/builds/{build_id}/artifacts", response_model=list[ArtifactOut], summary="A build's artifacts")
def build_artifacts(build_id: RowId, _: Viewer, db: DatabaseDep) -> list[ArtifactOut]:
    with db.session() as session:
        if get_build(session, build_id) is None:
            raise not_found("build", build_id)
        return [ArtifactOut.of(a) for a in artifacts_of_build(session, build_id)]


@router.get(
    "/artifacts/{artifact_id}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}},
    summary="Download one artifact (X-Checksum-SHA256 carries its sha256)",
)
def download(artifact_id: RowId, _: Viewer, db: DatabaseDep, settings: SettingsDep) -> Response:
    with db.session() as session:
        found = get_artifact(session, artifact_id)
        if found is None:
            raise not_found("artifact", artifact_id)
        key, name, digest, size = found.storage_key, found.path.rsplit("/", 1)[-1], found.sha256, found.size
    store = artifact_store(settings)
    path = store.local_path(key)
    if path is not None:
        return FileResponse(
            path, media_type="application/octet-stream", filename=name, headers={"X-Checksum-SHA256": digest}
        )
    chunks = store.chunks(key)
    if chunks is None:
        raise not_found("artifact", f"{artifact_id} (its file is gone from the artifact store)")
    headers = {
        "X-Checksum-SHA256": digest,
        "Content-Length": str(size),
        "Content-Disposition": _attachment(name),
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


def _attachment(name: str) -> str:
    """Content-Disposition as FileResponse writes it (RFC 6266's filename* for non-ASCII names)."""
    quoted = quote(name)
    return f'attachment; filename="{name}"' if quoted == name else f"attachment; filename*=utf-8''{quoted}"
