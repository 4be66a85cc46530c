# The edgeplat Dagster code location: the gRPC server the webserver and daemon load
# (`dagster api grpc -m pipelines.definitions`), and the image the K8sRunLauncher starts runs in.
# Build from the repository root:
#   docker build -f deploy/docker/code-location.Dockerfile -t edgeplat/code-location:$(git rev-parse --short HEAD) .
# The dependency set is requirements.lock used as constraints: the runtime dependencies of
# ./edge_sync and . at the lock's versions, without the lock's dev tools.
FROM python:3.11.11-slim-bookworm

ARG UV_VERSION=0.13.9
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    EDGEPLAT_HOME=/var/lib/edgeplat

# git: the GitOps resource clones the rollout-spec repository; nothing else comes from Debian.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 edgeplat \
    && useradd --system --uid 10001 --gid edgeplat --home-dir /opt/dagster --shell /usr/sbin/nologin edgeplat

WORKDIR /opt/dagster/app
COPY requirements.lock ./
COPY edge_sync ./edge_sync
COPY pyproject.toml README.md workspace.yaml ./
COPY cli ./cli
COPY pipelines ./pipelines
COPY assets ./assets
COPY resources ./resources
COPY edgeplat ./edgeplat

# --compile-bytecode: the file system is read-only at run time, so byte code is written now.
RUN pip install "uv==${UV_VERSION}" \
    && sed '/^-e /d' requirements.lock > /tmp/constraints.txt \
    && uv pip install --system --no-cache --compile-bytecode -c /tmp/constraints.txt ./edge_sync . \
    && rm /tmp/constraints.txt \
    && mkdir -p "$DAGSTER_HOME" "$EDGEPLAT_HOME" \
    && chown edgeplat:edgeplat "$DAGSTER_HOME" "$EDGEPLAT_HOME"

USER 10001:10001
EXPOSE 3030
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "pipelines.definitions", "-a", "defs"]
