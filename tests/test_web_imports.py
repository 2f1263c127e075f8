"""Web processes hold no maths: loading the URLconf and the WSGI app imports no torch, sklearn, scipy or pandas.

Each check runs in a fresh interpreter (this one has long imported them all).
An import hook records, for the first import of each of those packages, the
project files on the stack, so a failure names the chain that pulled it in.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sklearn", "scipy", "pandas")

PROBE = r"""
import json, os, resource, sys, traceback

HEAVY = {heavy!r}
ROOT = {root!r}
chains = {{}}


class Recorder:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in chains:
            chains[top] = [f"{{f.filename.removeprefix(ROOT + '/')}}:{{f.lineno}}" for f in traceback.extract_stack()
                           if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
        return None  # only watching: the normal finders do the import


sys.meta_path.insert(0, Recorder())
import django

django.setup()
from django.urls import get_resolver

get_resolver().url_patterns
import workbench.wsgi  # noqa: E402,F401
{extra}
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print(json.dumps({{"loaded": sorted(m for m in HEAVY if m in sys.modules), "chains": chains,
                   "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "hwm_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1)}}))
"""


def probe(extra: str = "") -> dict:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="workbench.settings_test", PYTHONPATH=str(ROOT))
    code = PROBE.format(heavy=HEAVY, root=str(ROOT), extra=extra)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_urlconf_and_wsgi_load_without_the_maths_libraries():
    result = probe()
    # VmHWM is this process's own peak. ru_maxrss is printed too, but Linux carries the parent's
    # high-water mark over the fork and exec, so under a pytest process that has loaded torch it
    # reads the parent's size, not the probe's.
    print(f"peak RSS after the URLconf and workbench.wsgi: VmHWM {result['hwm_mb']} MB "
          f"(ru_maxrss {result['maxrss_mb']} MB)")
    assert result["loaded"] == [], json.dumps(result["chains"], indent=2)


def test_modules_the_views_import_on_request_stay_light():
    # project_detail and the meta-model views call these services (create, cancel, warm-start choice);
    # the workers import the maths when they train or adapt.
    result = probe("import learners.services.meta, learners.services.meta_data, learners.selectors, "
                   "annotate.selectors, learners.catalog")
    assert result["loaded"] == [], json.dumps(result["chains"], indent=2)


def test_services_read_hyper_parameters_from_the_catalog():
    from learners.catalog import META_HYPER_PARAMETERS
    from learners.services.meta import HYPER_PARAMETERS, hyper_parameters_clean

    assert HYPER_PARAMETERS is META_HYPER_PARAMETERS
    assert hyper_parameters_clean("maml", {})["k_shot"] == META_HYPER_PARAMETERS["k_shot"][3]
