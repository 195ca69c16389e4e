# syntax=docker/dockerfile:1
# cxstream worker / generator / wallboard image.
#   docker build -t cxstream:0.1.0 .
#   docker run --rm cxstream:0.1.0 --help
# One image, three roles: the command picks it (`worker`, `generate --rate N`, `wallboard`).

# --- build: wheels for cxstream and every dependency (rocksdict ships manylinux wheels) ---
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# README/LICENSE are optional here (the glob may match nothing); pyproject names the readme.
COPY pyproject.toml README.md* LICENSE* ./
COPY stream ./stream
RUN pip wheel --wheel-dir /wheels '.[rocksdb]'

# --- runtime ---------------------------------------------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="cxstream" \
      org.opencontainers.image.description="Real-time contact-center CX stream processor (Faust on Kafka)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    CXSTREAM_DATA_DIR=/data \
    CXSTREAM_WEB_HOST=0.0.0.0 \
    CXSTREAM_WEB_PORT=6066

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels 'cxstream[rocksdb]' \
 && groupadd --system --gid 10001 cxstream \
 && useradd --system --uid 10001 --gid cxstream --home-dir /home/cxstream --create-home \
      --shell /usr/sbin/nologin cxstream \
 && mkdir -p /data \
 && chown cxstream:cxstream /data

WORKDIR /home/cxstream
USER 10001:10001
# Named volumes mounted here start with the image's ownership (cxstream).
VOLUME ["/data"]

# Worker: /metrics and /healthz. The wallboard role listens on 8080.
EXPOSE 6066 8080

ENTRYPOINT ["cxstream"]
CMD ["worker"]
