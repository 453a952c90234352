# syntax=docker/dockerfile:1
# The streamfer image: the `streamfer` command and the example specs, run as a non-root
# user. docker-compose.yml builds it; see docs/deploy.md.

FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The bracket globs let the build go on when README.md or constraints.txt is absent.
COPY pyproject.toml README.m[d] constraints.tx[t] ./
COPY streams ./streams
COPY features ./features
COPY inference ./inference
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ -f constraints.txt ]; then pip install -c constraints.txt .; else pip install .; fi

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 streamfer \
    && useradd --system --uid 10001 --gid streamfer --home-dir /app --shell /usr/sbin/nologin streamfer
# Same path as in the build stage, so the venv's scripts keep working.
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=streamfer:streamfer examples ./examples
# The user owns its working folder, and a named volume mounted on models/ starts with that
# folder's owner, so the non-root user can write the demo model into it.
RUN mkdir -p /app/examples/models && chown streamfer:streamfer /app /app/examples/models
USER streamfer
EXPOSE 9108
ENTRYPOINT ["streamfer"]
CMD ["--help"]
