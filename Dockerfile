# IPT CDS Hooks service. Build: docker build -t ipt-cds .
# Run:   docker run -p 8080:8080 -e IPT_CDS_DATABASE_URL=postgresql://... ipt-cds
#
# Everything installed is pinned and hash-checked: the build tools from requirements-build.lock,
# the service's dependencies from requirements.lock (both written by scripts/lock). The service
# itself is built into a wheel and installed like any package, knowledge base (cards/) included.

# Stage 1: build the service's wheel.
FROM python:3.11.7-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --require-hashes -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY ipt_cds ./ipt_cds
COPY cards ./cards
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# Stage 2: the image that runs: dependencies from the lock, then the wheel; no source tree.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    IPT_CDS_HOST=0.0.0.0 \
    IPT_CDS_AUTH_MODE=required \
    IPT_CDS_PORT=8080 \
    IPT_CDS_WORKERS=1 \
    IPT_CDS_DATABASE_URL=sqlite:////data/ipt-cds.sqlite3 \
    IPT_CDS_SPOOL_DIR=/data/ipt-cds-spool

# A container listens beyond its own machine: client authentication is required (give it
# IPT_CDS_TRUST_FILE), unless a run says IPT_CDS_AUTH_MODE=off itself (docs/deployment.md).

# An unprivileged user owns nothing but the data folder.
RUN groupadd --system --gid 10001 ipt \
    && useradd --system --uid 10001 --gid ipt --home-dir /app --shell /usr/sbin/nologin ipt \
    && mkdir -p /data && chown ipt:ipt /data

# The dependencies first (their own layer, rebuilt only when the lock changes).
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps --no-index /tmp/wheels/ipt_cds-*.whl \
    && rm -rf /tmp/wheels \
    && python -c "from ipt_cds.knowledge.base import Knowledge; from ipt_cds.ops.config import Settings; Knowledge.load(Settings().knowledge_dir)"

WORKDIR /app
USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"IPT_CDS_PORT\"]}/health', timeout=2)"

# Workers come from IPT_CDS_WORKERS (the CLI reads every IPT_CDS_* setting).
CMD ["ipt-cds", "serve"]
