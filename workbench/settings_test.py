"""Settings for the test suite: the real settings with test defaults for what must be set.

DATABASE_URL and REDIS_URL pass through, so CI runs the same suite on
PostgreSQL and a standalone Redis. The worker processes the tests start use
this module too.
"""
import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-not-secret")
# One data dir (SQLite test database, embedded Redis socket, logs) per test
# run, so two runs on one machine never share them. Worker processes started
# by the tests inherit the variable and so the same folder.
os.environ.setdefault(
    "WORKBENCH_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test" / f"run-{os.getpid()}")
)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

from workbench.settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
