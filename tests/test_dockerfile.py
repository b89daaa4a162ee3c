"""Dockerfiles read as Docker's classic builder reads them: lines, words and variables, stages, and
the image configuration each instruction makes (no Docker needed)."""

from __future__ import annotations

import re

import pytest

from workers.executors.dockerfile import DockerfileError, parse_dockerfile, stages_needed
from workers.executors.dockerfile_words import expand, expand_words, key_values
from workers.executors.image_config import DEFAULT_PATH, StageState


def stage_state(text: str, config: dict[str, object] | None = None, **build_args: str) -> StageState:
    """The state after the instructions of the Dockerfile's only stage (RUN, COPY and ADD skipped)."""
    dockerfile = parse_dockerfile(text)
    state = StageState(config or {}, dockerfile.escape)
    for instruction in dockerfile.stages[0].instructions:
        if instruction.keyword == "ARG":
            state.declare(instruction, build_args, {})
        elif instruction.keyword not in ("RUN", "COPY", "ADD"):
            state.apply(instruction)
    return state


def test_continuations_comments_and_the_escape_directive_make_instructions_with_their_lines() -> None:
    text = (
        "# escape=`\n"
        "FROM busybox\n"
        "RUN echo a `\n"
        "# a comment inside is dropped\n"
        "    && echo b\n"
        "\n"
        "run echo C:\\path\n"
    )
    dockerfile = parse_dockerfile(text)
    first, second = dockerfile.stages[0].instructions
    assert (first.line, first.keyword, first.args) == (3, "RUN", "echo a     && echo b")
    assert (second.line, second.keyword, second.args) == (7, "RUN", "echo C:\\path")
    assert dockerfile.escape == "`"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM busybox\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"),
        ("RUN echo\nFROM busybox\n", "Dockerfile:1: RUN: only ARG may come before the first FROM"),
        ("# just a comment\n", "no FROM instruction"),
        ("FROM busybox\nRUN --mount=type=cache,target=/x echo\n", "flag --mount is not supported"),
        ("FROM busybox\nCOPY --chmod=755 a /a\n", "flag --chmod is not supported"),
        ("FROM a AS x\nFROM b AS X\n", "two stages are named 'x'"),
        ("FROM a AS\n", "expected FROM <image> [AS <name>]"),
        ("# escape=^\nFROM a\n", "invalid escape token"),
    ],
)
def test_what_the_classic_builder_refuses_is_an_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(message)):
        parse_dockerfile(text)


def test_exec_and_shell_forms_are_told_apart() -> None:
    dockerfile = parse_dockerfile('FROM a\nCMD ["sh", "-c", "echo hi"]\nCMD [not json\nRUN ["a", 1]\n')
    exec_form, broken, mixed = dockerfile.stages[0].instructions
    assert exec_form.exec_form == ("sh", "-c", "echo hi")
    assert broken.exec_form is None and broken.args == "[not json"
    assert mixed.exec_form is None  # not all strings: the shell form, as Docker reads it


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A-${A}-${B:-dflt}-${A:+alt}-${B:+alt}", "1-1-dflt-alt-"),
        ("'$A' \"$A\" \\$A", "$A 1 $A"),
        ('"a\\"b" \'c\\d\'', 'a"b c\\d'),
        ("${A:-${C}x}", "1"),
        ("${B:-${C}x}", "3x"),
        ("$ $1 ${A}", "$  1"),
    ],
)
def test_variables_are_substituted_as_docker_does(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "C": "3"}) == expected


def test_substituted_values_split_into_words_unless_quoted() -> None:
    assert expand_words('$PORTS "$PORTS" x', {"PORTS": "80 443"}) == ["80", "443", "80 443", "x"]


@pytest.mark.parametrize("text", ["${A", "${}", "${A:?x}", "'open", '"open'])
def test_broken_substitutions_and_quotes_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        expand(text, {"A": "1"})


def test_key_values_take_quotes_and_the_legacy_form() -> None:
    assert key_values('A=1 B="two words" "c d"=e') == [("A", "1"), ("B", '"two words"'), ('"c d"', "e")]
    assert key_values("PATH /usr/bin:$PATH") == [("PATH", "/usr/bin:$PATH")]
    with pytest.raises(ValueError, match="is not KEY=value"):
        key_values("A=1 B")


def test_env_label_expose_user_workdir_cmd_and_healthcheck_make_the_configuration() -> None:
    state = stage_state(
        "FROM a\n"
        "ARG VERSION=dev\n"
        "ENV APP=/srv/app VERSION=${VERSION} OLD=$APP\n"
        'LABEL org.team="core" "a b"=c\n'
        "EXPOSE 8000 9000-9001/udp\n"
        "WORKDIR $APP\n"
        "WORKDIR sub\n"
        "USER 1000:1000\n"
        "STOPSIGNAL SIGINT\n"
        'VOLUME ["/data"]\n'
        "HEALTHCHECK --interval=1m30s --retries=2 CMD wget -q localhost\n"
        'SHELL ["/bin/bash", "-c"]\n'
        "CMD echo hi\n",
        VERSION="1.5",
    )
    config = state.config
    assert config["Env"] == [DEFAULT_PATH, "APP=/srv/app", "VERSION=1.5", "OLD="]
    assert config["Labels"] == {"org.team": "core", "a b": "c"}
    assert set(config["ExposedPorts"]) == {"8000/tcp", "9000/udp", "9001/udp"}
    assert (config["WorkingDir"], config["User"], config["StopSignal"]) == (
        "/srv/app/sub",
        "1000:1000",
        "SIGINT",
    )
    assert config["Volumes"] == {"/data": {}}
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"],
        "Interval": 90 * 10**9,
        "Retries": 2,
    }
    assert config["Cmd"] == ["/bin/bash", "-c", "echo hi"]


def test_an_entrypoint_resets_the_cmd_of_the_base_image_but_not_one_of_its_own_stage() -> None:
    base = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    assert stage_state('FROM a\nENTRYPOINT ["/app"]\n', base).config["Cmd"] is None
    kept = stage_state('FROM a\nCMD ["--help"]\nENTRYPOINT ["/app"]\n', base).config
    assert (kept["Entrypoint"], kept["Cmd"]) == (["/app"], ["--help"])


def test_args_reach_run_steps_but_never_the_image_configuration() -> None:
    dockerfile = parse_dockerfile('FROM a\nARG TOKEN\nARG MODE=fast\nRUN make $MODE\nRUN ["make"]\n')
    state = StageState({"Env": ["PATH=/bin"]}, "\\")
    arg_token, arg_mode, shell_run, exec_run = dockerfile.stages[0].instructions
    state.declare(arg_token, {"TOKEN": "it's"}, {})
    state.declare(arg_mode, {}, {})
    argv, extra = state.run_command(shell_run, {"http_proxy": "http://proxy:3128"})
    assert argv == [
        "/bin/sh",
        "-c",
        "export MODE=fast TOKEN='it'\"'\"'s' http_proxy=http://proxy:3128; make $MODE",
    ]
    assert extra == {}
    argv, extra = state.run_command(exec_run, {})
    assert argv == ["make"] and extra == {"MODE": "fast", "TOKEN": "it's"}
    assert state.config["Env"] == ["PATH=/bin"]


def test_an_arg_before_from_is_used_in_from_and_only_inside_a_stage_that_declares_it() -> None:
    dockerfile = parse_dockerfile("ARG BASE=busybox\nARG V=1\nFROM $BASE\nARG V\nRUN echo $V\n")
    assert [i.args for i in dockerfile.global_args] == ["BASE=busybox", "V=1"]
    state = StageState({}, "\\")
    state.declare(dockerfile.stages[0].instructions[0], {}, {"BASE": "busybox", "V": "1"})
    assert state.args == {"V": "1"}


def test_only_the_stages_the_target_needs_are_built() -> None:
    dockerfile = parse_dockerfile(
        "FROM a AS deps\nFROM b AS unused\nFROM c AS build\nCOPY --from=deps /x /x\n"
        "FROM build AS test\nFROM d AS final\nCOPY --from=build /x /x\n"
    )
    assert [s.name for s in stages_needed(dockerfile, None)] == ["deps", "build", "final"]
    assert [s.name for s in stages_needed(dockerfile, "test")] == ["deps", "build", "test"]
    with pytest.raises(DockerfileError, match="target stage 'prod' is not in the Dockerfile"):
        stages_needed(dockerfile, "prod")
