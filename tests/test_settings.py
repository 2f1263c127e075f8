"""Settings read from the environment fail loudly, naming the variable."""
import json
import os
import re
import secrets
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


def settings_values(tmp_path, names: list[str], **env) -> subprocess.CompletedProcess:
    """Run a fresh interpreter that prints the named settings as JSON (missing ones as null)."""
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES | {"DJANGO_SETTINGS_MODULE"}}
    clean.update(WORKBENCH_DATA_DIR=str(tmp_path), **env)
    code = ("import json, workbench.settings as s; "
            f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


# Every variable these tests set, so the developer's own environment cannot leak into them.
PRODUCTION_VARIABLES = {
    "SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER", "WORKBENCH_DEMO",
}
HTTPS_NAMES = ["SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
               "SECURE_PROXY_SSL_HEADER", "WORKBENCH_DEMO"]


def production_env(**overrides: str) -> dict[str, str]:
    """What a deployment behind an HTTPS proxy sets (README, Configuration)."""
    env = {
        "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "workbench.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://workbench.example.org", "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1", "SECURE_HSTS_PRELOAD": "1",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    }
    env.update(overrides)
    return env


def check_deploy(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES | {"DJANGO_SETTINGS_MODULE"}}
    clean.update(WORKBENCH_DATA_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_with_production_settings_reports_no_issues(tmp_path):
    run = check_deploy(tmp_path, production_env())
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "WARNINGS:" not in output and "System check identified some issues" not in output, output
    assert "System check identified no issues" in output


def test_check_deploy_without_https_variables_names_what_is_left_to_opt_into(tmp_path):
    env = production_env()
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"):
        env.pop(name)
    output = check_deploy(tmp_path, env).stderr
    assert sorted(set(re.findall(r"security\.W\d+", output))) == ["security.W004", "security.W008"], output


def test_production_defaults_to_secure_cookies_and_no_demo(tmp_path):
    run = settings_values(tmp_path, HTTPS_NAMES, DEBUG="0", SECRET_KEY="k")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0, "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True, "SECURE_PROXY_SSL_HEADER": None, "WORKBENCH_DEMO": False,
    }


def test_debug_serves_plain_http_with_the_demo(tmp_path):
    values = json.loads(settings_values(tmp_path, HTTPS_NAMES, DEBUG="1").stdout)
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_SSL_REDIRECT"] is False and values["WORKBENCH_DEMO"] is True


def test_production_on_plain_http_loopback_turns_the_cookie_flags_off(tmp_path):
    run = settings_values(tmp_path, HTTPS_NAMES, DEBUG="0", SECRET_KEY="k",
                          SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0")
    values = json.loads(run.stdout)
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False


def test_proxy_header_name_becomes_the_wsgi_key_django_reads(tmp_path):
    run = settings_values(tmp_path, ["SECURE_PROXY_SSL_HEADER"], **production_env())
    assert json.loads(run.stdout) == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}


@pytest.mark.parametrize("env, message", [
    ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not an integer"),
    ({"SECURE_HSTS_SECONDS": "-1"}, "SECURE_HSTS_SECONDS=-1 must be at least 0"),
    ({"SECURE_SSL_REDIRECT": "sure"}, "SECURE_SSL_REDIRECT='sure' is not a boolean"),
    ({"SESSION_COOKIE_SECURE": "2"}, "SESSION_COOKIE_SECURE='2' is not a boolean"),
    ({"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"},
     "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto: https' is not a header name"),
    ({"CSRF_TRUSTED_ORIGINS": "workbench.example.org"},
     "CSRF_TRUSTED_ORIGINS: 'workbench.example.org' is not an origin"),
    ({"CSRF_TRUSTED_ORIGINS": "https://workbench.example.org/"},
     "CSRF_TRUSTED_ORIGINS: 'https://workbench.example.org/' is not an origin"),
    ({"WORKBENCH_DEMO": "please"}, "WORKBENCH_DEMO='please' is not a boolean"),
])
def test_bad_https_values_stop_start_up_with_the_variable_named(tmp_path, env, message):
    run = settings_values(tmp_path, ["DEBUG"], **production_env(**env))
    assert run.returncode != 0 and message in run.stderr
