"""pyproject.toml and environment.yml list the same dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= set(extra)
    env = re.findall(r'^\s+- "([^"]+)"\s*$', (ROOT / "environment.yml").read_text(), re.M)
    pip = set(env) - {"-e ."}
    assert {"scipy>=1.14,<2", "ml_dtypes>=0.5,<1"} <= declared
    assert pip == declared


def test_console_script_is_the_cli_main():
    import importlib

    from pi2lab.cli import main

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["pi2lab"]
    module, func = target.split(":")
    assert getattr(importlib.import_module(module), func) is main
