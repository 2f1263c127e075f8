"""The layer and type checks of `make lint` also hold inside the suite (CI's PostgreSQL leg runs no `make lint`).

`lint-imports` checks the contracts in `.importlinter` (the maths of `learners`
imports no Django, Celery or web code); mypy checks the packages `mypy.ini`
lists. Each runs as `make lint` runs it, from the repository root with the
virtualenv's own executables, and mypy reuses `.mypy_cache`, so a run after
`make lint` takes a few seconds. Two more tests break each check on purpose,
so a contract or a setting that stopped checking anything would fail here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv running the suite has the tools (requirements.txt)
TIMEOUT = 240  # seconds; mypy with an empty cache takes about 40 here


def run(tool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the tree in `cwd` is importable
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_import_contracts_are_kept():
    result = run("lint-imports", "--no-logo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_contracts_break_when_the_maths_imports_django(tmp_path):
    for package in ("learners", "annotate", "workbench"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    module = tmp_path / "learners" / "federated" / "wire.py"
    module.write_text(module.read_text() + "\nfrom learners.services import federated as _  # noqa: E402,F401\n")

    result = run("lint-imports", "--no-logo", "--no-cache", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "learners.federated is not allowed to import django" in result.stdout
    assert "learners.federated.wire -> learners.services.federated" in result.stdout


def test_mypy_finds_no_errors_in_the_checked_packages():
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_mypy_settings_reject_an_unannotated_function(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def scale(values, factor: float = 2.0):\n    return [v * factor for v in values]\n")

    # The file given replaces mypy.ini's `files`; /dev/null keeps this run out of .mypy_cache.
    result = run("mypy", "--config-file", str(ROOT / "mypy.ini"), "--cache-dir", os.devnull, str(probe))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "[no-untyped-def]" in result.stdout
