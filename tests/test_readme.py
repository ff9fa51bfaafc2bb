"""The README is the operator's manual: every setting a service reads is in its table."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SERVICES = ["auth", "gateway", "upload", "inference", "history", "admin"]


def documented_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, flags=re.MULTILINE))


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_of_the_service_is_documented(service: str) -> None:
    settings = importlib.import_module(f"{service}_service.settings").Settings
    missing = {name.upper() for name in settings.model_fields} - documented_variables()
    assert not missing, f"README's configuration table lacks {sorted(missing)}"


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make run" in first_block and "make test" in first_block
