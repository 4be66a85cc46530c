# The edge-sync device agent as a container image (the IoT Edge module, or any container host).
# Build context: dist/agent, made by `make agent-artifacts`, which prints the exact command:
#   docker build -f deploy/docker/edge-agent.Dockerfile --build-arg AGENT_VERSION=0.1.0 \
#     --build-arg AGENT_WHEEL_SHA256=<sha256 of the wheel> -t edgeplat.azurecr.io/edge-sync:<tag> dist/agent
# The wheel is checked against AGENT_WHEEL_SHA256 and every dependency is installed by hash;
# nothing is taken from a package index by name alone.
FROM python:3.11.11-slim-bookworm

ARG AGENT_VERSION=0.1.0
ARG AGENT_WHEEL_SHA256
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY requirements-device.txt edge_sync-${AGENT_VERSION}-py3-none-any.whl /tmp/agent/

RUN test -n "${AGENT_WHEEL_SHA256}" \
    && echo "${AGENT_WHEEL_SHA256}  /tmp/agent/edge_sync-${AGENT_VERSION}-py3-none-any.whl" | sha256sum --check --strict - \
    && python -m pip install --no-cache-dir --require-hashes --no-deps -r /tmp/agent/requirements-device.txt \
    && python -m pip install --no-cache-dir --no-deps --no-index /tmp/agent/edge_sync-${AGENT_VERSION}-py3-none-any.whl \
    && rm -rf /tmp/agent \
    && groupadd --system --gid 10001 edge-sync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin edge-sync \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/edge-sync /run/edge-sync

USER 10001:10001
WORKDIR /var/lib/edge-sync
VOLUME ["/var/lib/edge-sync"]

# checkov:skip=CKV_DOCKER_2: IoT Edge restarts modules by exit code (restartPolicy) and reports their runtimeStatus; it does not act on a Docker HEALTHCHECK. The agent reports its own health in the health stream.
ENTRYPOINT ["edge-sync"]
CMD ["run", "--config", "/etc/edge-sync/device.toml"]
