"""Settings, read from the environment (12-factor) through django-environ.

With no environment at all the project runs on an embedded default: a SQLite file and
Celery's file-system broker under ``var/``, so a fresh clone needs no server. Set
``DATABASE_URL`` and ``REDIS_URL`` (or ``CELERY_BROKER_URL``) to run on PostgreSQL and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# First, so that every setting below (VAR_DIR included) can come from .env; the process
# environment wins over the file.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    POSTBACKS_ALLOW_PRIVATE_NETWORKS=(bool, False),
)
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env("DEBUG")
# With DEBUG off and no SECRET_KEY, the key stays empty: Django refuses anything that signs
# (sessions, CSRF, password resets) and tracker.wsgi refuses to serve, while commands that
# sign nothing (migrate, simulate, the worker, worker_health) still run.
SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-key-change-me" if DEBUG else "")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Before django.contrib.admin: its templates override the admin's (the dashboard on the
    # admin index, postbacks/templates/admin/index.html).
    "postbacks",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "rangefilter",
    "tracker",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files without DEBUG, from the web process itself (WhiteNoise).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tracker.urls"
WSGI_APPLICATION = "tracker.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + immediate transactions let the web server and the worker threads share one file.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    # One connection pool per web process. Celery workers drop it and keep one connection
    # per thread instead (see tracker.celery.no_database_pool_in_workers).
    # Health checks: the pool checks a connection before handing it out, so one PostgreSQL
    # dropped while it sat in the pool (failover, restart, pg_terminate_backend) is replaced,
    # not used. Django's backend with a check that looks at the socket instead of running a
    # query (tracker/backends/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "tracker.backends.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 2,
            "max_size": env.int("DATABASE_POOL_SIZE", default=20),
            # Seconds a request waits for a connection: only while connections are being
            # made again (after a failover) or PostgreSQL cannot be reached (a sync worker
            # uses one at a time), so /cv answers 503 within it instead of holding the
            # network until gunicorn's 30 s timeout. Not shorter: a failover's burst of new
            # connections on a loaded machine took over 0.5 s.
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=2.0),
            # A failed connection attempt is retried with a doubling delay for this long, then
            # given up: the next request that needs a connection tries at once. Short, so
            # the web is back within about a second of PostgreSQL, whatever the outage's length
            # (psycopg_pool's default, 300 s, let the delay grow to minutes).
            "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_SECONDS", default=1.0),
        }
    }
# Migrations on PostgreSQL (tracker/backends/postgresql/schema.py): the longest a migration
# waits for a lock before it fails (and is run again: README, "Upgrades"), rather than queue
# every query of the table behind it; and the longest one of its statements runs (index
# builds CONCURRENTLY excepted). PostgreSQL durations: "5s", "500ms", "10min"; "0": none.
MIGRATION_LOCK_TIMEOUT = env.str("MIGRATION_LOCK_TIMEOUT", default="5s")
MIGRATION_STATEMENT_TIMEOUT = env.str("MIGRATION_STATEMENT_TIMEOUT", default="15min")
USING_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (make run does it) and served by WhiteNoise. With DEBUG
# on, WhiteNoise serves straight from the apps instead, and names are not hashed.
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Production-safe defaults when DEBUG is off ------------------------------------------------
# HTTPS is the operator's to declare (README, "Production"): HSTS and the redirect stay off
# until it is, so the demo and a first install over plain http keep working.
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    # The header (and value) by which the proxy in front says a request came over https,
    # "HTTP_X_FORWARDED_PROTO,https" by default; empty: no proxy is trusted for it. Only
    # right when that proxy overwrites the header a client may send.
    _proxy_ssl_header = env.list(
        "SECURE_PROXY_SSL_HEADER", default=["HTTP_X_FORWARDED_PROTO", "https"]
    )
    if len(_proxy_ssl_header) not in (0, 2):
        raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER: a header and a value, or empty")
    SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    # Paths (regexes, no leading slash) still answered over http with SECURE_SSL_REDIRECT on.
    SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[])
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Celery -----------------------------------------------------------------------------------
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=env.str("REDIS_URL", default=""))
if not CELERY_BROKER_URL:
    # Embedded broker: messages are files under var/broker, no server needed; kombu's
    # file-system transport with files written whole (tracker.broker: kombu's own lets a
    # worker read a half-written message and die of it).
    for sub in ("queue", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "tracker.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        # Exchange tables (remote control, worker_health); kombu's default is ./control.
        "control_folder": str(_BROKER_DIR / "control"),
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ: a publish returns once the broker has taken the message (publisher confirms).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
else:
    # Redis keeps an unacked message invisible for this long before redelivering it. Long
    # waits (delays, retries) live in the database, so no task is ever scheduled past it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 3}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
# Keep a worker thread's database connection across tasks (Celery's Django fixup would close
# it before and after each one: a new PostgreSQL connection per wake-up).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"postbacks.dispatch": {"queue": "postbacks"}}
# One worker process per core (Celery's prefork default); inside each, the dispatcher sends
# postbacks on its own thread pool (POSTBACKS_DISPATCH_THREADS), since they wait on the network.
CELERY_WORKER_POOL = env.str("CELERY_WORKER_POOL", default="prefork")
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=os.cpu_count() or 1)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Postbacks --------------------------------------------------------------------------------
# Allow destinations on private, loopback and link-local addresses (local demo and tests only).
POSTBACKS_ALLOW_PRIVATE_NETWORKS = env("POSTBACKS_ALLOW_PRIVATE_NETWORKS")
# How often the sweeper wakes a dispatcher for due deliveries and takes back deliveries of
# lost workers (seconds): the longest a postback waits after a lost wake-up or a long delay.
POSTBACKS_SWEEP_SECONDS = env.float("POSTBACKS_SWEEP_SECONDS", default=2.0)
# A claimed delivery's lease is its timeout (the attempt's wall-clock deadline) plus this
# margin (seconds); past it, the sweeper takes the delivery back.
POSTBACKS_LEASE_MARGIN_SECONDS = env.int("POSTBACKS_LEASE_MARGIN_SECONDS", default=5)
# Dispatcher processes write a heartbeat this often; the deliveries of a process silent for
# POSTBACKS_WORKER_DEAD_SECONDS are taken back without waiting for their leases (seconds).
POSTBACKS_HEARTBEAT_SECONDS = env.float("POSTBACKS_HEARTBEAT_SECONDS", default=2.0)
POSTBACKS_WORKER_DEAD_SECONDS = env.float("POSTBACKS_WORKER_DEAD_SECONDS", default=8.0)
# Requests in flight per worker process, and at most this many to one destination host.
POSTBACKS_DISPATCH_THREADS = env.int("POSTBACKS_DISPATCH_THREADS", default=100)
POSTBACKS_HOST_CONCURRENCY = env.int("POSTBACKS_HOST_CONCURRENCY", default=50)
# How the dispatcher sends: "aiohttp" (one event loop per worker process) or "requests" (a
# thread per request in flight). With POSTBACKS_HTTP_PROXY set, always "requests".
POSTBACKS_DISPATCH_CLIENT = env.str("POSTBACKS_DISPATCH_CLIENT", default="aiohttp")
# Deliveries claimed per statement; seconds between claims while requests are in flight;
# seconds one wake-up keeps claiming before the Celery task ends (in-flight ones finish).
POSTBACKS_DISPATCH_BATCH = env.int("POSTBACKS_DISPATCH_BATCH", default=100)
POSTBACKS_DISPATCH_POLL_SECONDS = env.float("POSTBACKS_DISPATCH_POLL_SECONDS", default=0.02)
POSTBACKS_DISPATCH_MAX_SECONDS = env.float("POSTBACKS_DISPATCH_MAX_SECONDS", default=30.0)
# A dispatcher with nothing left to send keeps looking this long (seconds) before it goes idle:
# a steady stream of conversions is then claimed in small batches by one running dispatcher.
POSTBACKS_DISPATCH_LINGER_SECONDS = env.float("POSTBACKS_DISPATCH_LINGER_SECONDS", default=0.1)
# Wake-ups are coalesced through a flag in this Redis (default: REDIS_URL, else a redis://
# broker; empty: every wake-up is published), which lapses after this many seconds.
POSTBACKS_WAKE_REDIS_URL = env.str(
    "POSTBACKS_WAKE_REDIS_URL",
    default=env.str("REDIS_URL", default="")
    or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""),
)
POSTBACKS_WAKE_COALESCE_SECONDS = env.float("POSTBACKS_WAKE_COALESCE_SECONDS", default=1.0)
# A wake-up not consumed within this many seconds is dropped (the sweeper sends new ones).
POSTBACKS_WAKE_EXPIRES_SECONDS = env.float("POSTBACKS_WAKE_EXPIRES_SECONDS", default=60.0)
# Waits up to this long use a Celery countdown wake-up; longer ones wait for the sweeper.
POSTBACKS_COUNTDOWN_MAX_SECONDS = env.int("POSTBACKS_COUNTDOWN_MAX_SECONDS", default=60)
# Longest wait between two attempts, whatever the backoff or Retry-After says (seconds).
POSTBACKS_BACKOFF_MAX_SECONDS = env.int("POSTBACKS_BACKOFF_MAX_SECONDS", default=6 * 3600)
# Response bodies are read up to this many bytes into the postback log.
POSTBACKS_RESPONSE_BODY_MAX_BYTES = env.int("POSTBACKS_RESPONSE_BODY_MAX_BYTES", default=2048)
# Active postback rules are cached per process this long; edits in the admin apply to other
# processes (workers, other web servers) within this delay (seconds).
POSTBACKS_RULES_CACHE_SECONDS = env.float("POSTBACKS_RULES_CACHE_SECONDS", default=5.0)
# Egress proxy for postbacks, e.g. http://proxy:3128 (HTTP_PROXY and friends are ignored).
POSTBACKS_HTTP_PROXY = env.str("POSTBACKS_HTTP_PROXY", default="")
POSTBACKS_USER_AGENT = env.str("POSTBACKS_USER_AGENT", default="postback-manager/0.1")
# Masked wherever a URL or error is stored or shown: query parameters whose names match these
# case-insensitive globs, and the first group of these path regexes (Telegram bot tokens).
POSTBACKS_MASK_PARAMS = env.list(
    "POSTBACKS_MASK_PARAMS",
    default=["*key*", "*token*", "*secret*", "*passw*", "*signature*", "*auth*", "sig", "pwd"],
)
POSTBACKS_MASK_PATH_PATTERNS = env.list(
    "POSTBACKS_MASK_PATH_PATTERNS",
    # Telegram's bot token, a Slack webhook's and a Discord webhook's secret segment.
    default=[
        r"/bot(\d+:[A-Za-z0-9_-]+)",
        r"/services/T[A-Z0-9]+/B[A-Z0-9]+/([A-Za-z0-9]{8,})",
        r"/webhooks/\d+/([A-Za-z0-9_-]{8,})",
    ],
)
# A rotated signing secret keeps signing requests (beside the new one) this many hours.
POSTBACKS_SIGNING_GRACE_HOURS = env.float("POSTBACKS_SIGNING_GRACE_HOURS", default=24.0)
# Where the platform destinations send (overridable for a proxy, or a local receiver in
# tests); each transport appends its documented path.
POSTBACKS_META_BASE_URL = env.str("POSTBACKS_META_BASE_URL", default="https://graph.facebook.com")
POSTBACKS_TIKTOK_BASE_URL = env.str(
    "POSTBACKS_TIKTOK_BASE_URL", default="https://business-api.tiktok.com"
)
POSTBACKS_TELEGRAM_BASE_URL = env.str(
    "POSTBACKS_TELEGRAM_BASE_URL", default="https://api.telegram.org"
)
# What a chat webhook URL starts with, per kind (space-separated; e.g. a local receiver in
# tests): the rule form refuses any other URL, the worker sends to no other.
POSTBACKS_SLACK_WEBHOOK_PREFIXES = env.str(
    "POSTBACKS_SLACK_WEBHOOK_PREFIXES", default="https://hooks.slack.com/services/"
).split()
POSTBACKS_DISCORD_WEBHOOK_PREFIXES = env.str(
    "POSTBACKS_DISCORD_WEBHOOK_PREFIXES",
    default="https://discord.com/api/webhooks/ https://discordapp.com/api/webhooks/ "
    "https://canary.discord.com/api/webhooks/ https://ptb.discord.com/api/webhooks/",
).split()

# Attempts (the postback log) and finished deliveries older than this many days are deleted
# by the hourly postbacks.retention task, in batches; 0 keeps everything.
POSTBACKS_RETENTION_DAYS = env.int("POSTBACKS_RETENTION_DAYS", default=30)

# The sweeper is not on this schedule: every worker process runs it on a thread of its own
# (postbacks.dispatcher.Maintenance), so it never waits for a free task slot or for beat.
CELERY_BEAT_SCHEDULE = {
    "tracker-uploads-resume": {
        "task": "tracker.uploads_resume",
        "schedule": timedelta(seconds=60),
        "options": {"expires": 60},
    },
    "postbacks-retention": {
        "task": "postbacks.retention",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3600},
    },
}

# --- Health and metrics (tracker.health, tracker.metrics; README "Health and metrics") ------
# /ready and worker_health: all checks together answer within this many seconds.
HEALTH_TIMEOUT_SECONDS = env.float("HEALTH_TIMEOUT_SECONDS", default=0.5)
# /metrics: with METRICS_TOKEN set, a scrape must send "Authorization: Bearer <token>";
# METRICS_OPEN=true serves it to anyone (a private network); neither: 403.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_OPEN = env.bool("METRICS_OPEN", default=False)
# prometheus-client's multiprocess mode: every web and worker process of this machine writes
# its counters here (the library reads the variable itself); empty: each process counts
# alone and /metrics shows the answering process's counters only. Clear it before the
# processes start (make run does), never while they run.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # set but empty: single-process mode

# --- Tracker ----------------------------------------------------------------------------------
# Public base URL of this tracker, used for the campaign tracking URLs shown in the admin.
TRACKER_BASE_URL = env.str("TRACKER_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Proxies in front of the tracker that append to X-Forwarded-For (e.g. 1 behind one load
# balancer). Unset: X-Forwarded-For is ignored and REMOTE_ADDR is the visitor's address.
TRACKER_PROXY_COUNT = env.int("TRACKER_PROXY_COUNT", default=None)
# Click enrichment (tracker.enrichment): MaxMind .mmdb files (City, Country, ASN, ISP,
# Connection-Type; comma-separated paths) whose answers win over the packaged country/ASN
# database; and whether stored IPs lose their last octet (IPv4) / last 80 bits (IPv6).
TRACKER_GEOIP_MMDB = env.list("TRACKER_GEOIP_MMDB", default=[])
TRACKER_ANONYMIZE_IP = env.bool("TRACKER_ANONYMIZE_IP", default=False)
DEFAULT_CURRENCY = env.str("DEFAULT_CURRENCY", default="USD")
# Reports and each conversion's display payout are in this currency (see tracker.currency).
TRACKER_DISPLAY_CURRENCY = env.str("TRACKER_DISPLAY_CURRENCY", default="USD").upper()
CLICK_COOKIE_NAME = "cf_click_id"
CLICK_COOKIE_MAX_AGE = 30 * 24 * 3600
TRACKER_CAMPAIGN_CACHE_SECONDS = env.float("TRACKER_CAMPAIGN_CACHE_SECONDS", default=5.0)  # /c
# The click buffer (tracker/clickbuffer.py): /c puts clicks on a Redis stream and the workers
# write them, so a visitor is redirected while PostgreSQL is down. Default: REDIS_URL; empty
# (the SQLite demo): /c writes each click itself.
TRACKER_CLICK_BUFFER_REDIS_URL = env.str(
    "TRACKER_CLICK_BUFFER_REDIS_URL", default=env.str("REDIS_URL", default="")
)
# Seconds /c waits for Redis before it spools the click to a local file instead.
TRACKER_CLICK_BUFFER_TIMEOUT = env.float("TRACKER_CLICK_BUFFER_TIMEOUT", default=0.05)
# Where clicks go while Redis is unreachable too (one file per web process, moved to Redis
# by the next click that reaches it).
TRACKER_CLICK_SPOOL_DIR = env.str("TRACKER_CLICK_SPOOL_DIR", default=str(VAR_DIR / "spool"))
# How long a buffered click's copy stays readable by /cv before it is surely written (s).
TRACKER_CLICK_COPY_SECONDS = env.int("TRACKER_CLICK_COPY_SECONDS", default=86400)
# A writer's unacknowledged clicks are taken over by another after this many seconds.
TRACKER_CLICK_CLAIM_SECONDS = env.float("TRACKER_CLICK_CLAIM_SECONDS", default=30.0)
# Exchange rates are cached per process this long (saving a rate clears it at once there).
TRACKER_RATES_CACHE_SECONDS = env.float("TRACKER_RATES_CACHE_SECONDS", default=5.0)
# CSV uploads of conversions (admin and manage.py conversions_upload) up to this size (bytes).
TRACKER_UPLOAD_MAX_BYTES = env.int("TRACKER_UPLOAD_MAX_BYTES", default=20 * 1024 * 1024)
# An upload queued or running whose processing writes no progress for this long (seconds; a
# run writes it every 50 rows and at the end of each 60 s task) is processed again by the beat.
TRACKER_UPLOAD_STALLED_SECONDS = env.int("TRACKER_UPLOAD_STALLED_SECONDS", default=180)

# --- REST API (/api/v1/, tracker.api) -----------------------------------------------------------
# Requests per token (or signed-in user) and period, e.g. 1200/min; counted in the cache below.
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="1200/min")


def redis_url_next_db(url: str) -> str:
    """``url`` on the next Redis database (1 when it names none; 14 after 15): the cache's
    default beside the broker's, so that clearing the cache never drops queued tasks."""
    base, slash, tail = url.partition("?")[0].rpartition("/")
    query = url.partition("?")[2]
    if base.count("/") >= 2 and tail.isdigit():
        number = int(tail)
        url = f"{base}{slash}{number + 1 if number < 15 else number - 1}"
    else:
        url = f"{url.partition('?')[0].rstrip('/')}/1"
    return f"{url}?{query}" if query else url


# The cache (API throttle counts, dashboard figures) is shared by every process through Redis
# when REDIS_URL is set (one count per token), on a database of its own: REDIS_CACHE_URL when
# set, else REDIS_URL's next database. Without Redis each process counts alone.
_CACHE_REDIS_URL = env.str(
    "REDIS_CACHE_URL",
    default=redis_url_next_db(env.str("REDIS_URL")) if env.str("REDIS_URL", default="") else "",
)
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _CACHE_REDIS_URL}
        if _CACHE_REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tracker.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tracker.api.base.ModelPermissions"],
    "DEFAULT_THROTTLE_CLASSES": ["tracker.api.auth.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": API_THROTTLE_RATE},
    "DEFAULT_PAGINATION_CLASS": "tracker.api.base.PagePagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "tracker.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "tracker.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Postback manager API",
    "DESCRIPTION": "Traffic sources, affiliate networks, offers, landers, campaigns and "
    "postback rules; clicks, conversions, deliveries and attempts. Authenticate with "
    "`Authorization: Token <token>` (tokens are created in admin, API tokens). Errors: "
    '`{"error": <code>, "detail": <text or field errors>}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page list every resource and field: signed-in users (token or
    # admin session) only, unless API_SCHEMA_PUBLIC opens them.
    "SERVE_PERMISSIONS": [
        "rest_framework.permissions.AllowAny"
        if env.bool("API_SCHEMA_PUBLIC", default=False)
        else "rest_framework.permissions.IsAuthenticated"
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for the one channel enum (conversion method, status-change source, inbound
    # channel): without it each field names its own copy, and `check --deploy` warns.
    "ENUM_NAME_OVERRIDES": {"ChannelEnum": "tracker.events.Channel"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tracker.api.schema.error_responses",
    ],
}
