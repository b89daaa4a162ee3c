"""Every git the server runs, with one environment: nothing of the host's git configuration, and
credentials kept out of git's arguments.

git would read the worker user's ~/.gitconfig (and XDG and system files), where a filter, a hooks
path, an fsmonitor or an LFS setting runs a program on every checkout of a pushed repository:
GIT_CONFIG_GLOBAL and GIT_CONFIG_NOSYSTEM close those files, `--template=` (given by the callers
that create repositories) the template directory, and the settings below win over any a
repository's own configuration holds.

Credentials reach git through a credential helper that reads them from its environment, scoped to the
remote's scheme, host and port: every user sees a process's arguments in `ps`, and only its own
user its environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from git import Git
from git.exc import GitCommandError

from ciserver.clone_urls import Remote, git_protocols

# Run by git as `sh -c '<helper> get'`; printf is a shell builtin, so no process has the values in
# its arguments. It answers only `get`: git also calls helpers to `store` and `erase`.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" != get || '
    'printf "username=%s\\npassword=%s\\n" "$CISERVER_GIT_USERNAME" "$CISERVER_GIT_PASSWORD"; }; f'
)
_SETTINGS = (("core.hooksPath", os.devnull), ("core.fsmonitor", "false"))


def git_env(allow_local: bool, remote: Remote | None = None) -> dict[str, str]:
    """The variables every git we run gets, on top of the worker's own environment."""
    settings = list(_SETTINGS)
    env = {
        "GIT_ALLOW_PROTOCOL": git_protocols(allow_local),
        "GIT_TERMINAL_PROMPT": "0",  # a private repository without credentials fails, it never waits
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_PARAMETERS": "",  # `git -c` settings, had a git started the worker
        "GIT_ASKPASS": "true",
        "SSH_ASKPASS": "true",
    }
    if remote is not None and remote.username is not None:
        parts = urlsplit(remote.url)
        settings.append((f"credential.{parts.scheme}://{parts.netloc}.helper", _CREDENTIAL_HELPER))
        env["CISERVER_GIT_USERNAME"] = remote.username
        env["CISERVER_GIT_PASSWORD"] = remote.password or ""
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for n, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = key, value
    return env


def git_at(cwd: Path | None, allow_local: bool, remote: Remote | None = None) -> Git:
    """A GitPython command runner in `cwd` with that environment."""
    git = Git(str(cwd) if cwd else None)
    git.update_environment(**git_env(allow_local, remote))
    return git


def git_message(exc: GitCommandError, remote: Remote | None = None) -> str:
    """git's own words for a failure, with the remote shown as answers show it."""
    text = str(exc.stderr or exc).strip().replace("stderr: ", "").strip("'\" \n")
    return text.replace(remote.url, remote.shown) if remote is not None else text
