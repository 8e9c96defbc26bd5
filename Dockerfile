# IPT CDS Hooks service. Build: docker build -t ipt-cds .
# Run:   docker run -p 8080:8080 -e IPT_CDS_DATABASE_URL=postgresql://... ipt-cds
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IPT_CDS_HOST=0.0.0.0 \
    IPT_CDS_PORT=8080 \
    IPT_CDS_WORKERS=1 \
    IPT_CDS_DATABASE_URL=sqlite:////data/ipt-cds.sqlite3

# An unprivileged user owns nothing but the data folder.
RUN groupadd --system --gid 10001 ipt \
    && useradd --system --uid 10001 --gid ipt --home-dir /app --shell /usr/sbin/nologin ipt \
    && mkdir -p /data && chown ipt:ipt /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY cards ./cards
RUN pip install -e .

USER 10001:10001
EXPOSE 8080
VOLUME ["/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"IPT_CDS_PORT\"]}/health', timeout=2)"

# Workers come from IPT_CDS_WORKERS (the CLI reads every IPT_CDS_* setting).
CMD ["ipt-cds", "serve"]
