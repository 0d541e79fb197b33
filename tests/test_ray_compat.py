"""reactdiff/ray_compat.py holds every use of a Ray private API: the installed Ray is one they were
checked on, each still resolves, and none is used anywhere else."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import ray

from reactdiff import ray_compat

REPO = Path(__file__).resolve().parent.parent
# `ray…._private` / `ray…._internal` modules, and private names imported from ray.
PRIVATE_USE = re.compile(r"\bray(\.\w+)*\.(_private|_internal)\b|\bfrom ray[\w.]* import .*\b_[a-z]")


def test_installed_ray_is_a_checked_version():
    assert ray.__version__ in ray_compat.CHECKED_RAY_VERSIONS, (
        f"Ray {ray.__version__} is installed, but the private Ray APIs in reactdiff/ray_compat.py were "
        f"checked on Ray {', '.join(ray_compat.CHECKED_RAY_VERSIONS)} only: recheck each function there "
        "against this release, then add it to ray_compat.CHECKED_RAY_VERSIONS"
    )


@pytest.mark.parametrize("symbol", ray_compat.PRIVATE_SYMBOLS)
def test_every_private_symbol_resolves(symbol):
    module_name, _, attributes = symbol.partition(":")
    value = importlib.import_module(module_name)
    for attribute in attributes.split("."):
        assert hasattr(value, attribute), (
            f"reactdiff/ray_compat.py uses {symbol}, which Ray {ray.__version__} does not have"
        )
        value = getattr(value, attribute)


def test_no_private_ray_api_outside_ray_compat():
    sources = [
        *REPO.glob("reactdiff/**/*.py"),
        *REPO.glob("jobs/**/*.py"),
        *REPO.glob("bench/*.py"),
        *REPO.glob("cluster/*.sh"),
    ]
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sources
        if path.name != "ray_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_USE.search(line)
    ]
    assert len(sources) > 50 and not found, "move these into reactdiff/ray_compat.py:\n" + "\n".join(found)
