"""A self-contained HTML template for `dvc plots show`, whose default page loads Vega from a CDN
and stays blank offline: the minified builds of npm `vega`, `vega-lite` and `vega-embed` (pinned
versions, sha256-checked tarballs from `npm pack`) inlined around DVC's `{plot_divs}`."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from dlprojects.core.data.mirrors import MirrorError, Npm
from dlprojects.core.errors import UserError
from dlprojects.core.files import write_atomic

PACKAGES = (  # in load order: vega-lite and vega-embed need vega
    (Npm("vega@6.4.0", "3521fb6ff68a94a40323954f0ba4484ba4014b157bfd37f89a3b063082320c42"),
     "package/build/vega.min.js"),
    (Npm("vega-lite@6.5.0", "811230a6bfd2cdbfc359d0c38f624a90df86657b7f251b67be88bcc4eee32b7f"),
     "package/build/vega-lite.min.js"),
    (Npm("vega-embed@7.3.0", "d9a958ced3240f0418df7d5e12e97dba6e63cecda15b8403e47a0db7eb6ea859"),
     "package/build/vega-embed.min.js"),
)


def render(scripts: list[str]) -> str:
    """The template: every script inline, then DVC's `{plot_divs}` placeholder."""
    escaped = [script.replace("</script", "<\\/script") for script in scripts]
    inline = "\n".join(f"<script>{script}</script>" for script in escaped)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots</title>\n"
            f"{inline}\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def build(out: Path) -> Path:
    """Fetch the pinned packages and write the template to `out` (atomically)."""
    scripts = []
    with tempfile.TemporaryDirectory() as scratch:
        for package, member in PACKAGES:
            folder = Path(scratch) / package.spec
            folder.mkdir()
            try:
                tarball = package.fetch(folder)
            except MirrorError as error:
                raise UserError(f"cannot build the offline plots template: {error}; it needs npm "
                                f"and the npm registry (or its mirror in ~/.npmrc)") from None
            with tarfile.open(tarball) as archive:
                scripts.append(archive.extractfile(member).read().decode("utf-8"))
    return write_atomic(out, render(scripts))
