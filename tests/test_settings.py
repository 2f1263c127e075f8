"""Settings read from the environment fail loudly, naming the variable."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from workbench.envconfig import env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent


def load_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    clean.update(WORKBENCH_DATA_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", "import workbench.settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)"],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def test_bool_int_and_list_readers(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    monkeypatch.setenv("X_NUM", "12")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_FLAG", False) is True
    assert env_int("X_NUM", 0) == 12
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        env_bool("X_FLAG", False)
    monkeypatch.setenv("X_NUM", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_NUM='twelve' is not an integer"):
        env_int("X_NUM", 0)
    monkeypatch.setenv("X_NUM", "0")
    with pytest.raises(ImproperlyConfigured, match="X_NUM=0 must be at least 1"):
        env_int("X_NUM", 5, minimum=1)


def test_production_refuses_to_start_without_secret_key(tmp_path):
    run = load_settings(tmp_path)
    assert run.returncode != 0 and "SECRET_KEY is not set" in run.stderr


def test_debug_generates_and_keeps_a_dev_key(tmp_path):
    assert load_settings(tmp_path, DEBUG="1").returncode == 0
    key = (tmp_path / "dev-secret-key").read_text()
    assert len(key) > 40
    assert load_settings(tmp_path, DEBUG="1").returncode == 0
    assert (tmp_path / "dev-secret-key").read_text() == key


def test_embedded_defaults_and_explicit_urls(tmp_path):
    default = load_settings(tmp_path, SECRET_KEY="k")
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["workbench.sqlite_backend", f"redis+socket://{tmp_path}/redis.sock"]
    explicit = load_settings(tmp_path, SECRET_KEY="k", DATABASE_URL="postgres://u@h:5432/d", REDIS_URL="redis://h:6379/2")
    assert explicit.stdout.split() == ["django.db.backends.postgresql", "redis://h:6379/2"]


@pytest.mark.parametrize("env, message", [
    ({"REDIS_URL": "http://h"}, "REDIS_URL='http://h' must start with redis://"),
    ({"DATABASE_URL": "mysql://u@h/d"}, "supports sqlite:// and postgres:// only"),
    ({"DATABASE_URL": "nonsense"}, "DATABASE_URL='nonsense' cannot be parsed"),
    ({"DEBUG": "sometimes"}, "DEBUG='sometimes' is not a boolean"),
])
def test_bad_values_stop_start_up_with_the_variable_named(tmp_path, env, message):
    run = load_settings(tmp_path, SECRET_KEY="k", **env)
    assert run.returncode != 0 and message in run.stderr
