"""Collecting artifacts and saving caches on real directories: what is kept, what is refused, and
that nothing outside the workspace is ever read or written."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from ciserver.storage import BlobStore, FileBlobStore
from ciserver.store.blobs import DatabaseBlobStore
from workers import artifacts, cache


@pytest.fixture(params=["files", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each store the server can keep artifacts and caches in (CISERVER_BLOB_STORE)."""
    if request.param == "files":
        return FileBlobStore(tmp_path / "store")
    if request.param == "sqlite":
        return DatabaseBlobStore(f"sqlite:///{tmp_path / 'ciserver.db'}", "test")
    return DatabaseBlobStore(request.getfixturevalue("postgres_url"), "test")


def leftovers(store: BlobStore) -> list[str]:
    """Every blob the store holds, whole or not: what a failed write must not leave."""
    if isinstance(store, FileBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, DatabaseBlobStore)
    with store.engine.connect() as connection:
        return [str(k) for (k,) in connection.execute(sa.text("SELECT key FROM blobs"))]


def put(store: BlobStore, key: str, data: bytes) -> str:
    with store.writer(key) as out:
        out.write(data)
    return key


def workspace(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "ws"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    return root


def collect(
    root: Path, patterns: list[str], store: BlobStore, max_bytes: int = 10**6
) -> list[artifacts.StoredFile]:
    warnings: list[str] = []
    kept = artifacts.collect(root, patterns, store, 7, max_bytes=max_bytes, warn=warnings.append)
    collect.warnings = warnings  # type: ignore[attr-defined]
    return kept


def test_globs_and_directories_are_kept_with_size_and_sha256(tmp_path: Path, store: BlobStore) -> None:
    root = workspace(
        tmp_path, {"dist/a.whl": "A", "dist/b.tar.gz": "B", "reports/x/junit.xml": "<x/>", "other.txt": "o"}
    )
    kept = collect(root, ["dist/*.whl", "reports/"], store)
    assert [(f.path, f.size, f.sha256) for f in kept] == [
        ("dist/a.whl", 1, hashlib.sha256(b"A").hexdigest()),
        ("reports/x/junit.xml", 4, hashlib.sha256(b"<x/>").hexdigest()),
    ]
    with store.reader(kept[0].storage_key) as f:
        assert f is not None and f.read() == b"A"


def test_a_pattern_that_matches_nothing_is_a_warning_not_a_failure(tmp_path: Path, store: BlobStore) -> None:
    root = workspace(tmp_path, {"a.txt": "a"})
    assert collect(root, ["dist/*.whl"], store) == []
    assert collect.warnings == ["artifacts: 'dist/*.whl' matched no file"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("pattern", ["../outside.txt", "/etc/passwd", "a/../../outside.txt"])
def test_paths_leading_out_are_refused_naming_them(tmp_path: Path, pattern: str, store: BlobStore) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    root = workspace(tmp_path, {"a.txt": "a"})
    with pytest.raises(artifacts.ArtifactError, match="inside the workspace"):
        collect(root, [pattern], store)


def test_symlinks_out_of_the_workspace_are_refused_also_inside_a_kept_directory(
    tmp_path: Path, store: BlobStore
) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    root = workspace(tmp_path, {"reports/ok.txt": "ok"})
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(artifacts.ArtifactError, match=r"'link\.txt'.*leads outside the workspace"):
        collect(root, ["link.txt"], store)
    (root / "reports" / "escape").symlink_to(tmp_path)
    with pytest.raises(artifacts.ArtifactError, match="leads outside"):
        collect(root, ["reports/"], store)


def test_a_symlink_inside_the_workspace_is_kept_as_the_file_it_names(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {"real.txt": "real"})
    (root / "alias.txt").symlink_to("real.txt")
    assert [f.path for f in collect(root, ["alias.txt"], store)] == ["real.txt"]


def test_artifacts_over_the_limit_are_refused_and_nothing_is_left_in_the_store(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {"big.bin": "x" * 100})
    with pytest.raises(artifacts.ArtifactError, match="over the limit"):
        collect(root, ["big.bin"], store, max_bytes=10)
    assert leftovers(store) == []


def test_placing_artifacts_writes_them_at_their_paths(tmp_path: Path, store: BlobStore) -> None:
    stored = put(store, "7/0", b"wheel")
    target = tmp_path / "next"
    target.mkdir()
    assert artifacts.place([("dist/a.whl", stored)], target, store) == 1
    assert (target / "dist" / "a.whl").read_text() == "wheel"
    with pytest.raises(artifacts.ArtifactError):
        artifacts.place([("../escape", stored)], target, store)


def test_the_cache_key_hashes_the_files_it_names(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"requirements.txt": "requests==2\n"})
    key = cache.render_key("pip-{{ hashFiles('requirements.txt') }}", root)
    assert key.startswith("pip-") and len(key) == 4 + 64
    assert cache.render_key("pip-{{ hashFiles('requirements.txt') }}", root) == key
    (root / "requirements.txt").write_text("requests==3\n")
    assert cache.render_key("pip-{{ hashFiles('requirements.txt') }}", root) != key
    assert cache.render_key('plain-{{ hashFiles("missing.txt") }}', root) == "plain-"


def test_a_saved_cache_restores_into_a_fresh_workspace(tmp_path: Path, store: BlobStore) -> None:
    root = workspace(tmp_path, {".cache/pip/wheel": "w", "src/app.py": "app"})
    archive = cache.archive_key(1, "refs/heads/main", "pip-abc")
    assert not cache.restore(store, archive, root)
    cache.save(store, archive, root, [".cache/pip"], max_bytes=10**6)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert cache.restore(store, archive, fresh)
    assert (fresh / ".cache/pip/wheel").read_text() == "w"
    assert not (fresh / "src").exists()


def test_a_cache_over_the_limit_is_not_saved_and_leaves_no_partial_file(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {".cache/big": "x" * 50_000})
    archive = cache.archive_key(1, "refs/heads/main", "k")
    with pytest.raises(cache.CacheError, match="over the limit"):
        cache.save(store, archive, root, [".cache"], max_bytes=1000)
    assert leftovers(store) == [], "refused from the sizes alone, before the archive is made"


def test_an_archive_with_members_leading_out_is_refused_on_restore(tmp_path: Path, store: BlobStore) -> None:
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("pwned")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="../escaped.txt")
    root = workspace(tmp_path, {})
    with pytest.raises(cache.CacheError, match="cannot be restored"):
        cache.restore(store, put(store, "evil.tar", evil.read_bytes()), root)
    assert not (tmp_path / "escaped.txt").exists()
    assert os.listdir(root) == []


def test_expired_artifacts_are_removed_with_their_files_and_no_longer_served(
    tmp_path: Path, store: BlobStore
) -> None:
    from ciserver.config import Settings
    from ciserver.outbox import remove_expired_artifacts
    from ciserver.storage import artifact_store
    from ciserver.store.artifacts import add_artifacts, get_artifact
    from ciserver.store.db import session_scope
    from ciserver.store.models import Build, Job
    from ciserver.store.projects import add_project
    from tests.support.store import fernet_of

    settings = Settings(data_dir=tmp_path / "data")
    root = workspace(tmp_path, {"dist/a.whl": "A", "dist/b.whl": "B"})
    with session_scope(settings.db_url) as session:
        project = add_project(
            session,
            name="octo/x",
            forge="github",
            repo_url="https://x.test/x.git",
            secret="s",
            fernet=fernet_of(session),
        )
        build = Build(project_id=project.id, ref="refs/heads/main", branch="main", sha="a" * 40)
        session.add(build)
        session.flush()
        job = Job(
            build_id=build.id,
            position=0,
            name="j",
            stage="t",
            image="i",
            script=[],
            env={},
            timeout=1,
            after=[],
        )
        session.add(job)
        session.flush()
        kept = artifacts.collect(
            root, ["dist/a.whl"], artifact_store(settings), job.id, max_bytes=100, warn=print
        )
        old = add_artifacts(session, job, kept, expire_in=0)[0].id
        fresh = artifacts.collect(
            root, ["dist/b.whl"], artifact_store(settings), job.id + 1, max_bytes=100, warn=print
        )
        new = add_artifacts(session, job, fresh, expire_in=3600)[0].id
    assert remove_expired_artifacts(settings) == 1
    with session_scope(settings.db_url) as session:
        assert get_artifact(session, old) is None
        assert get_artifact(session, new) is not None
    assert not (settings.artifacts_dir / kept[0].storage_key).exists()
    assert (settings.artifacts_dir / fresh[0].storage_key).exists()


SPARSE_10_TB = 10 * 1024**4


def sparse(path: Path, size: int = SPARSE_10_TB) -> Path:
    """What `truncate -s 10T` makes: a file that says 10 TB and takes no disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_a_sparse_10_tb_artifact_is_refused_from_its_size_before_a_byte_is_copied(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {"small.txt": "s"})
    sparse(root / "big")
    with pytest.raises(artifacts.ArtifactError, match=r"CISERVER_ARTIFACT_MAX_BYTES\) at 'big'"):
        collect(root, ["small.txt", "big"], store, max_bytes=1024**2)
    assert leftovers(store) == []


def test_a_file_that_grows_while_copied_is_cut_at_the_limit_and_removed(
    tmp_path: Path, store: BlobStore
) -> None:
    source = tmp_path / "grows"
    source.write_bytes(b"x" * 5000)
    assert artifacts._copy(source, store, "copy", 1000) is None
    assert leftovers(store) == []


def test_a_sparse_10_tb_cache_path_is_not_saved_and_nothing_is_written(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {".cache/small": "s"})
    sparse(root / ".cache" / "big")
    archive = cache.archive_key(1, "refs/heads/main", "k")
    with pytest.raises(cache.CacheError, match=r"limit of 1,048,576 bytes \(CISERVER_CACHE_MAX_BYTES\)"):
        cache.save(store, archive, root, [".cache"], max_bytes=1024**2)
    assert leftovers(store) == []


def test_an_archive_that_would_grow_past_the_limit_while_written_is_cut_off(
    tmp_path: Path, store: BlobStore
) -> None:
    root = workspace(tmp_path, {f".cache/{i}": "" for i in range(50)})  # empty files: headers only
    archive = cache.archive_key(1, "refs/heads/main", "k")
    with pytest.raises(cache.CacheError, match="the archive grew"):
        cache.save(store, archive, root, [".cache"], max_bytes=10_000)
    assert leftovers(store) == []


def test_caches_are_kept_per_ref_and_fall_back_on_the_default_branch(tmp_path: Path) -> None:
    main = cache.archives(1, "k", "refs/heads/main", "main")
    feature = cache.archives(1, "k", "refs/heads/feature", "main")
    tag = cache.archives(1, "k", "refs/tags/v1", None)
    assert [path for path, _ in main] == [main[0][0]]
    assert feature[0][0] != main[0][0] and feature[1][0] == main[0][0]
    assert tag[1] == (main[0][0], " of refs/heads/main")


def test_an_archive_holding_a_pipe_restores_nothing(tmp_path: Path, store: BlobStore) -> None:
    made = workspace(tmp_path / "made", {"deps/ok.txt": "ok"})
    os.mkfifo(made / "deps" / "pipe")
    archive = cache.archive_key(1, "refs/heads/main", "k")
    cache.save(store, archive, made, ["deps"], max_bytes=10**6)
    root = workspace(tmp_path / "next", {"src/app.py": "app"})
    with pytest.raises(cache.CacheError, match="cannot be restored"):
        cache.restore(store, archive, root)
    assert sorted(os.listdir(root)) == ["src"], "nothing half-restored, no staging left"


def test_a_link_out_of_the_workspace_is_restored_as_a_link_never_followed(
    tmp_path: Path, store: BlobStore
) -> None:
    made = workspace(tmp_path / "made", {"venv/ok.txt": "ok"})
    (made / "venv" / "python").symlink_to("/usr/bin/python3")
    (made / "venv" / "host").symlink_to("/")
    archive = cache.archive_key(1, "refs/heads/main", "k")
    cache.save(store, archive, made, ["venv"], max_bytes=10**6)
    root = workspace(tmp_path, {})
    assert cache.restore(store, archive, root)
    assert os.readlink(root / "venv" / "python") == "/usr/bin/python3"
    assert os.readlink(root / "venv" / "host") == "/" and (root / "venv" / "ok.txt").read_text() == "ok"


def test_a_member_below_a_link_of_the_archive_is_refused(tmp_path: Path, store: BlobStore) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        link = tarfile.TarInfo("d")
        link.type, link.linkname = tarfile.SYMTYPE, "sub"
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("d/x"))
    root = workspace(tmp_path, {})
    with pytest.raises(cache.CacheError):
        cache.restore(store, put(store, "evil.tar", evil.read_bytes()), root)
    assert os.listdir(root) == []


def test_a_restored_cache_replaces_what_is_in_the_way_without_following_links(
    tmp_path: Path, store: BlobStore
) -> None:
    made = workspace(tmp_path / "made", {"vendor/lib/a.py": "new", "vendor/b.py": "b"})
    archive = cache.archive_key(1, "refs/heads/main", "k")
    cache.save(store, archive, made, ["vendor"], max_bytes=10**6)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = workspace(tmp_path / "next", {"vendor/lib/a.py": "old", "vendor/keep.py": "k"})
    (root / "vendor" / "b.py").symlink_to(outside / "b.py")
    assert cache.restore(store, archive, root)
    assert (root / "vendor/lib/a.py").read_text() == "new"
    assert (root / "vendor/keep.py").read_text() == "k"
    assert not (root / "vendor/b.py").is_symlink() and (root / "vendor/b.py").read_text() == "b"
    assert os.listdir(outside) == []


def test_hash_files_never_walks_a_linked_directory_nor_reads_a_link_out(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "shadow").write_text("root:secret")
    root = workspace(tmp_path, {"requirements.txt": "requests==2\n"})
    alone = cache.hash_files(root, ["requirements.txt"])
    (root / "host").symlink_to(outside)
    (root / "shadow.txt").symlink_to(outside / "etc" / "shadow")
    (root / "loop").symlink_to(root)
    for patterns in (["**"], ["**/*"], ["host/**"], ["host/etc/shadow"], ["*.txt"], ["loop/**/*.txt"]):
        assert cache.hash_files(root, patterns) in (alone, ""), patterns
    assert cache.hash_files(root, ["**/*.txt"]) == alone


def test_hash_files_follows_a_link_to_a_file_inside_the_workspace(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"real/requirements.txt": "requests==2\n"})
    (root / "requirements.txt").symlink_to("real/requirements.txt")
    assert cache.hash_files(root, ["requirements.txt"]) == cache.hash_files(root, ["real/requirements.txt"])


def test_hash_files_over_a_huge_tree_stops_with_a_cache_error(tmp_path: Path) -> None:
    from workers import workspace_glob

    root = workspace(tmp_path, {f"d/{i}.txt": "" for i in range(30)})
    workspace_glob.MAX_ENTRIES, saved = 20, workspace_glob.MAX_ENTRIES
    try:
        with pytest.raises(cache.CacheError, match="visits over 20"):
            cache.hash_files(root, ["**/*.lock"])
    finally:
        workspace_glob.MAX_ENTRIES = saved
