"""The offline `dvc plots show` template, built from the real npm registry."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dlprojects import plots_template
from dlprojects.core.errors import UserError

pytestmark = pytest.mark.network


def test_the_template_inlines_vega_and_keeps_dvcs_placeholder(tmp_path):
    out = plots_template.build(tmp_path / "reports/plots_template.html")
    page = out.read_text()
    assert page.count("<script>") == 3 and not re.search(r"<script[^>]*\ssrc=", page)
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC's CDN tags dropped
    assert "vegaEmbed" in page and len(page) > 500_000
    assert [p.name for p in out.parent.iterdir()] == ["plots_template.html"]


def test_a_tampered_package_fails_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    package, member = plots_template.PACKAGES[0]
    tampered = dataclasses.replace(package, sha256="0" * 64)
    monkeypatch.setattr(plots_template, "PACKAGES", ((tampered, member),))
    with pytest.raises(UserError, match=r"^cannot build the offline plots template: "
                                        r"vega-6.4.0.tgz does not match its pinned sha256; "):
        plots_template.build(tmp_path / "plots_template.html")
    assert list(tmp_path.iterdir()) == []
