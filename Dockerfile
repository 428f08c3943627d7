# syntax=docker/dockerfile:1
# Build stage: install pushd and its dependencies into a virtualenv, the same way
# scripts/bootstrap.sh does (pip install from pyproject.toml).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pushd ./pushd
COPY actors ./actors
COPY storage ./storage
RUN python -m venv /opt/pushd && /opt/pushd/bin/pip install .

# Runtime stage: the virtualenv and the config, nothing else; a non-root user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home pushd
COPY --from=build /opt/pushd /opt/pushd
COPY config.toml /etc/pushd/config.toml
ENV PATH=/opt/pushd/bin:$PATH \
    PUSHD_CONFIG=/etc/pushd/config.toml \
    PUSHD_SERVER__HOST=0.0.0.0 \
    PUSHD_SERVER__PORT=8080 \
    PUSHD_SERVER__DATA_DIR=/data
USER pushd
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os,sys,urllib.request; port=os.environ.get('PUSHD_SERVER__PORT','8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/api/healthcheck', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["pushd"]
CMD ["serve"]
