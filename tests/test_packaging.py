"""What pyproject.toml declares about the package itself."""

from __future__ import annotations

import re
import tomllib

from .conftest import REPO


def test_licence_is_an_spdx_expression_so_installs_do_not_warn():
    """A ``license = {text = ...}`` table makes setuptools warn on every build and install (deprecated since
    setuptools 77, which reads the SPDX string form)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert tuple(map(int, re.fullmatch(r"setuptools>=(\d+)", setuptools).group(1).split("."))) >= (77,)
