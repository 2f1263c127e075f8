"""`make bench-federated` keeps working: its --quick smoke run writes every section and the report."""
import json
import subprocess
import sys

from tests.conftest import ROOT

SECTIONS = {"fedavg", "async", "hierarchy", "secagg", "robust", "privacy", "scale"}


def test_quick_run_writes_every_section_and_the_report(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.federated.run", "--quick", "--results-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["sections"]) == SECTIONS
    assert "loadavg_at_end" in results["machine"] and results["run_seconds"] > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Targets" in report and "| hierarchy |" in report
