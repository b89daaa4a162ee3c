"""Image builds against the real engine: every RUN step as hardened as a job, nothing but the
workspace in the build, Dockerfile features as the classic builder has them, the step cache per
ref, and no container left behind (not even while a reaper runs)."""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from tests.support.engine import BUSYBOX
from tests.support.executor import assert_nothing_left, build_spec, job, run, write_context
from workers.executors.base import BuildCache, BuildFailed, ExecutorError, Limits
from workers.executors.docker import DockerExecutor

# One database is enough here: image builds are the engine's work, the same whatever the database.
ONE_DATABASE = True

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("test_images")]

# CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID: a job's capabilities, as /proc shows them
JOB_CAPABILITY_MASK = "00000000000000cb"


def tag_for(image_tags: list[str], name: str) -> str:
    tag = f"ciserver-test-build/{name}:{uuid.uuid4().hex[:12]}"
    image_tags.append(tag)
    return tag


def build(executor: DockerExecutor, spec: object) -> tuple[str, str]:
    """The built image's id and the build's output."""
    chunks: list[bytes] = []
    built = executor.build_image(spec, chunks.append, threading.Event())  # type: ignore[arg-type]
    return built.image_id, b"".join(chunks).decode(errors="replace")


def files_of(client: docker.DockerClient, image: str, path: str) -> dict[str, str]:
    """Name -> "file:<text>", "dir" or "link:<target>" for everything under `path` in the image."""
    container = client.containers.create(image, ["true"])
    try:
        stream, _ = container.get_archive(path)
        data = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    found = {}
    with tarfile.open(fileobj=data) as tar:
        for member in tar:
            if member.isdir():
                found[member.name] = "dir"
            elif member.issym():
                found[member.name] = f"link:{member.linkname}"
            else:
                extracted = tar.extractfile(member)
                found[member.name] = "file:" + (extracted.read().decode() if extracted else "")
    return found


def test_an_image_build_streams_its_output_and_returns_an_image_that_runs(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    unique = uuid.uuid4().hex  # a new file each time, so no step comes from the build cache
    workspace = write_context(
        tmp_path / "ws",
        f"FROM {BUSYBOX}\n"
        "ARG FLAVOUR=plain\n"
        "COPY greeting.txt /greeting.txt\n"
        'RUN echo "built with $FLAVOUR" > /built.txt && echo "run-step-saw $(cat /greeting.txt)"\n',
        **{"greeting.txt": f"hello-{unique}\n"},
    )
    tag = tag_for(image_tags, "ok")
    spec = build_spec(
        workspace,
        labels,
        tag,
        build_args={"FLAVOUR": "salt"},
        image_labels={"org.opencontainers.image.revision": unique},
    )
    chunks: list[bytes] = []
    built = executor.build_image(spec, chunks.append, threading.Event())
    output = b"".join(chunks).decode()
    assert f"run-step-saw hello-{unique}" in output and re.search(r"Step 4/\d : RUN echo", output)
    assert len(chunks) > 5  # streamed as it came, not handed over at the end
    image = client.images.get(tag)
    assert built.tag == tag and built.image_id == image.id and built.image_id.startswith("sha256:")
    assert built.digest == image.id  # never pushed: the engine has no repo digest for it
    assert image.labels["org.opencontainers.image.revision"] == unique
    assert "ciserver.test" not in image.labels  # the step containers' labels stay off the image
    assert not any(item.startswith("FLAVOUR=") for item in image.attrs["Config"]["Env"])
    code, ran, _ = run(executor, job(tmp_path / "job", labels, "cat /built.txt /greeting.txt", image=tag))
    assert code == 0 and ran.splitlines()[-2:] == ["built with salt", f"hello-{unique}"]
    assert_nothing_left(client, labels)


def test_run_steps_are_hardened_and_limited_as_jobs_are(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    workspace = write_context(
        tmp_path,
        f"FROM {BUSYBOX}\n"
        "RUN grep -E '^(CapEff|NoNewPrivs)' /proc/self/status\n"
        "RUN ping -c 1 -W 1 127.0.0.1 || echo no-raw-sockets\n"
        "RUN cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null || true\n",
    )
    spec = build_spec(
        workspace,
        labels,
        tag_for(image_tags, "hardened"),
        limits=Limits(memory=64 * 1024**2, cpus=1, pids=48),
    )
    _, output = build(executor, spec)
    assert re.search(rf"CapEff:\s+{JOB_CAPABILITY_MASK}", output), output
    assert re.search(r"NoNewPrivs:\s+1", output), output
    assert "no-raw-sockets" in output  # NET_RAW is dropped, as for jobs
    assert re.search(r"^48$", output, re.MULTILINE), output
    bomb = write_context(
        tmp_path / "bomb", f"FROM {BUSYBOX}\nRUN for i in $(seq 100); do sleep 5 & done; wait\n"
    )
    spec = replace(spec, workspace=bomb, tag=tag_for(image_tags, "bomb"))
    with pytest.raises(BuildFailed, match="non-zero code"):
        build(executor, spec)
    assert_nothing_left(client, labels)


def test_network_none_leaves_run_steps_only_the_loopback_interface(
    executor: DockerExecutor, labels: dict[str, str], image_tags: list[str], tmp_path: Path
) -> None:
    workspace = write_context(tmp_path, f"FROM {BUSYBOX}\nRUN cat /proc/net/dev\n")
    _, output = build(executor, build_spec(workspace, labels, tag_for(image_tags, "none"), network="none"))
    interfaces = re.findall(r"^\s*(\w+):", output, re.MULTILINE)
    assert interfaces == ["lo"], output


def test_a_context_or_dockerfile_that_leads_out_of_the_workspace_is_refused_naming_it(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    outside = tmp_path / "data"
    write_context(outside, f"FROM {BUSYBOX}\nCOPY . /stolen/\n", **{"secret.key": "the server's key"})
    workspace = tmp_path / "ws"
    write_context(workspace, f"FROM {BUSYBOX}\nCOPY . /ctx/\n")
    (workspace / "ctx").symlink_to("../data")
    (workspace / "Dockerfile.out").symlink_to("../data/Dockerfile")
    tag = tag_for(image_tags, "escape")
    with pytest.raises(BuildFailed, match=r"image_build.context: 'ctx' leads outside the workspace"):
        build(executor, build_spec(workspace, labels, tag, context="ctx"))
    with pytest.raises(BuildFailed, match=r"image_build.dockerfile: 'Dockerfile.out' leads outside"):
        build(executor, build_spec(workspace, labels, tag, dockerfile="Dockerfile.out"))
    with pytest.raises(ImageNotFound):
        client.images.get(tag)
    assert_nothing_left(client, labels)


def test_a_link_in_the_context_that_leads_out_is_refused_unless_dockerignore_leaves_it_out(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    (tmp_path / "secret.key").write_text("the server's key")
    workspace = write_context(
        tmp_path / "ws",
        f"FROM {BUSYBOX}\nCOPY . /ctx/\n",
        **{"app/main.py": "print(1)\n", "app/.env": "LOCAL=1\n", "docs/readme": "hi\n"},
    )
    (workspace / "docs" / "key").symlink_to("../../secret.key")
    (workspace / "app" / "self").symlink_to("main.py")
    tag = tag_for(image_tags, "links")
    with pytest.raises(BuildFailed, match=r"'docs/key', a link leading outside the workspace"):
        build(executor, build_spec(workspace, labels, tag))
    (workspace / ".dockerignore").write_text("# not sent\ndocs/key\n**/.env\n")
    image, _ = build(executor, build_spec(workspace, labels, tag))
    files = files_of(client, image, "/ctx")
    assert files == {
        "ctx": "dir",
        "ctx/.dockerignore": "file:# not sent\ndocs/key\n**/.env\n",
        "ctx/Dockerfile": f"file:FROM {BUSYBOX}\nCOPY . /ctx/\n",
        "ctx/app": "dir",
        "ctx/app/main.py": "file:print(1)\n",
        "ctx/app/self": "link:main.py",
        "ctx/docs": "dir",
        "ctx/docs/readme": "file:hi\n",
    }


def test_dockerfile_features_of_the_classic_builder(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    workspace = write_context(
        tmp_path,
        "ARG BASE=" + BUSYBOX + "\n"
        "FROM ${BASE} AS build\n"
        "ARG MODE\n"
        "WORKDIR /src/out\n"
        "COPY src/ ../\n"
        'RUN ["sh", "-c", "echo built in $MODE mode > result.txt"]\n'
        "RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' >> /etc/group\n"
        "FROM build AS test\n"
        "RUN echo tests would run here && exit 1\n"
        "FROM build AS runtime\n"
        "COPY --from=build --chown=app /src/out/*.txt /app/\n"
        "ADD bundle.tar /opt/\n"
        "ENV MODE_SEEN=$MODE\n"
        'ENTRYPOINT ["cat"]\n'
        'CMD ["/app/result.txt"]\n',
        **{"src/a.py": "a\n"},
    )
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        info = tarfile.TarInfo("tool/run.sh")
        info.size, info.mode = 3, 0o755
        tar.addfile(info, io.BytesIO(b"ok\n"))
    (workspace / "bundle.tar").write_bytes(bundle.getvalue())
    tag = tag_for(image_tags, "features")
    image, output = build(
        executor, build_spec(workspace, labels, tag, target="runtime", build_args={"MODE": "release"})
    )
    assert "tests would run here" not in output  # the test stage is not needed by the target
    config = client.api.inspect_image(image)["Config"]
    assert "MODE_SEEN=" in config["Env"]  # an ARG of another stage is not in scope here
    assert not any(item.startswith("MODE=") for item in config["Env"])  # nor kept from an exec-form RUN
    assert (config["Entrypoint"], config["Cmd"], config["WorkingDir"]) == (
        ["cat"],
        ["/app/result.txt"],
        "/src/out",
    )
    assert client.containers.run(image, remove=True).decode() == "built in release mode\n"
    assert files_of(client, image, "/opt/tool") == {"tool": "dir", "tool/run.sh": "file:ok\n"}
    owner = client.containers.run(image, entrypoint=["stat", "-c", "%u:%g", "/app/result.txt"], remove=True)
    assert owner.decode().strip() == "1234:1234"
    assert files_of(client, image, "/src") == {
        "src": "dir",
        "src/a.py": "file:a\n",
        "src/out": "dir",
        "src/out/result.txt": "file:built in release mode\n",
    }
    assert_nothing_left(client, labels)


def test_a_failing_run_step_fails_the_build_naming_its_exit_code_and_leaves_no_container(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    unique = uuid.uuid4().hex
    workspace = write_context(tmp_path, f"FROM {BUSYBOX}\nRUN echo about-to-fail-{unique} && exit 3\n")
    chunks: list[bytes] = []
    with pytest.raises(BuildFailed, match="returned a non-zero code: 3"):
        executor.build_image(
            build_spec(workspace, labels, tag_for(image_tags, "fails")), chunks.append, threading.Event()
        )
    assert f"about-to-fail-{unique}" in b"".join(chunks).decode()
    assert_nothing_left(client, labels)


@pytest.mark.parametrize(
    ("dockerfile", "files", "message"),
    [
        (None, {}, "the Dockerfile 'Dockerfile' is not in the build context"),
        (f"FROM {BUSYBOX}\nCOPY nothere /x\n", {}, "'nothere' is not in the build context"),
        (
            f"FROM {BUSYBOX}\nCOPY a b /x\n",
            {"a": "", "b": ""},
            "the destination must be a directory and end with a /",
        ),
        (f"FROM {BUSYBOX}\nADD https://example.org/x /x\n", {}, "ADD of a URL is not supported"),
        (
            f"FROM {BUSYBOX}\nRUN --mount=type=secret,id=x cat\n",
            {},
            "Dockerfile:2: RUN: flag --mount is not supported",
        ),
        (f"FROM {BUSYBOX}\nCOPY --chown=nobody-here a /a\n", {"a": ""}, "--chown: no 'nobody-here'"),
        ("FROM ciserver-test/no-such-image:1\n", {}, None),
    ],
)
def test_a_dockerfile_mistake_fails_the_build_naming_it(
    executor: DockerExecutor,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
    dockerfile: str | None,
    files: dict[str, str],
    message: str | None,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for name, text in files.items():
        (workspace / name).write_text(text)
    if dockerfile is not None:
        (workspace / "Dockerfile").write_text(dockerfile)
    spec = build_spec(workspace, labels, tag_for(image_tags, "mistake"))
    if message is None:  # an image the engine does not have: the engine's side, so an error, not a failure
        with pytest.raises(ExecutorError, match="is not on this worker's Docker Engine"):
            build(executor, spec)
        return
    with pytest.raises(BuildFailed, match=re.escape(message)):
        build(executor, spec)


def test_stopping_a_build_midway_raises_executor_error_and_leaves_no_container(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    unique = uuid.uuid4().hex
    workspace = write_context(tmp_path, f"FROM {BUSYBOX}\nRUN echo started-{unique} && sleep 60\n")
    tag = tag_for(image_tags, "stopped")
    stop = threading.Event()

    def sink(chunk: bytes) -> None:
        if f"started-{unique}".encode() in chunk:
            threading.Timer(0.3, stop.set).start()  # mid-step: the step's container is running

    started = time.monotonic()
    with pytest.raises(ExecutorError, match="build stopped"):
        executor.build_image(build_spec(workspace, labels, tag), sink, stop)
    assert time.monotonic() - started < 15
    assert_nothing_left(client, labels)
    with pytest.raises(ImageNotFound):
        client.images.get(tag)


def test_a_build_step_that_eats_memory_fails_the_build_within_the_jobs_limit(
    executor: DockerExecutor, labels: dict[str, str], image_tags: list[str], tmp_path: Path
) -> None:
    workspace = write_context(
        tmp_path, f"FROM {BUSYBOX}\nRUN x=$(head -c 300000000 /dev/zero | tr '\\0' a)\n"
    )
    spec = build_spec(
        workspace, labels, tag_for(image_tags, "hog"), limits=Limits(memory=32 * 1024**2, cpus=1, pids=64)
    )
    with pytest.raises(BuildFailed, match="non-zero code"):
        build(executor, spec)


def test_steps_come_from_the_cache_of_their_own_ref_or_the_default_branch_and_are_written_to_their_own(
    executor: DockerExecutor, labels: dict[str, str], image_tags: list[str], tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex
    workspace = write_context(
        tmp_path / "ws", f"FROM {BUSYBOX}\nCOPY a.txt /a.txt\nRUN echo ran-{unique}\n", **{"a.txt": "a\n"}
    )
    main, feature = tmp_path / "cache" / "main", tmp_path / "cache" / "feature"
    on_main = build_spec(
        workspace, labels, tag_for(image_tags, "cache"), cache=BuildCache(read=(main,), write=main)
    )
    first, output = build(executor, on_main)
    assert f"\nran-{unique}\n" in output and "Using cache" not in output
    written = sorted(path.name for path in main.iterdir())
    (workspace / "a.txt").touch()  # a fresh checkout: new times, same contents
    again, output = build(executor, on_main)
    assert again == first and output.count("Using cache") == 2 and f"\nran-{unique}\n" not in output
    on_feature = replace(on_main, cache=BuildCache(read=(feature, main), write=feature))
    (workspace / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY a.txt /a.txt\nRUN echo feature-{unique}\n")
    _, output = build(executor, on_feature)
    assert output.count("Using cache") == 1 and f"\nfeature-{unique}\n" in output  # COPY: main's cache
    assert sorted(path.name for path in main.iterdir()) == written  # the feature branch wrote none of main's
    assert len(list(feature.iterdir())) == 1


def test_a_reaper_running_during_a_build_leaves_its_step_containers_alone_and_none_stay_behind(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    """The reaper removes containers of this data dir whose worker is not alive: the build's steps
    must say whose they are from the start, or the reaper takes them for a lost worker's."""
    mine = {**labels, "ciserver.data_dir": str(tmp_path), "ciserver.worker": "alive-worker"}
    workspace = write_context(
        tmp_path / "ws",
        f"FROM {BUSYBOX}\nRUN sleep 1\nLABEL a=1\nCOPY Dockerfile /d\nLABEL b=2\nRUN sleep 1\nLABEL c=3\n",
    )
    removed: list[object] = []
    passes: list[int] = []
    done = threading.Event()

    def reap() -> None:
        while not done.is_set():
            removed.extend(
                executor.remove_leftovers(
                    {"ciserver.data_dir": str(tmp_path)},
                    keep=lambda found: found.get("ciserver.worker") in {"alive-worker"},
                )
            )
            passes.append(1)

    reaper = threading.Thread(target=reap)
    reaper.start()
    try:
        build(executor, build_spec(workspace, mine, tag_for(image_tags, "reaped")))
    finally:
        done.set()
        reaper.join()
    assert removed == [] and len(passes) > 10  # the reaper ran all along, and took nothing
    assert_nothing_left(client, labels)


def test_an_image_from_scratch_has_only_what_its_dockerfile_put_there(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    workspace = write_context(
        tmp_path,
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nCMD ["/bin/sh", "-c", "echo from scratch"]\n',
    )
    (workspace / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (workspace / "busybox").chmod(0o755)
    image, _ = build(executor, build_spec(workspace, labels, tag_for(image_tags, "scratch")))
    assert client.containers.run(image, remove=True) == b"from scratch\n"
    listed = client.containers.run(image, ["ls", "/"], remove=True).decode().split()
    assert set(listed) <= {"bin", "dev", "etc", "proc", "sys"}, listed  # the engine's mount points only


def test_a_dockerfile_cannot_build_on_or_copy_from_an_image_another_project_built(
    executor: DockerExecutor,
    client: docker.DockerClient,
    labels: dict[str, str],
    image_tags: list[str],
    tmp_path: Path,
) -> None:
    other = tag_for(image_tags, "other")
    build(executor, build_spec(write_context(tmp_path / "other", f"FROM {BUSYBOX}\nRUN echo theirs > /s\n"),
                               {**labels, "ciserver.project": "octo/other"}, other,
                               image_labels={"ciserver.project": "octo/other"}))  # fmt: skip
    mine = {**labels, "ciserver.project": "octo/mine"}
    for dockerfile, line in ((f"FROM {other}\n", 1), (f"FROM {BUSYBOX}\nCOPY --from={other} /s /s\n", 2)):
        workspace = write_context(tmp_path / f"mine{line}", dockerfile)
        with pytest.raises(
            BuildFailed, match=rf"Dockerfile:{line}: image .* was built by project octo/other"
        ):
            build(executor, build_spec(workspace, mine, tag_for(image_tags, "mine")))
    assert_nothing_left(client, labels)
