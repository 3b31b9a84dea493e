# lease-agent in a container: built on Debian 12 with its own packages.
#   docker build -t lease-agent .
#   docker run --rm lease-agent --help
# compose.yaml runs a PostgreSQL and three agents from this image.

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libpqxx-dev libpq-dev libcli11-dev libpugixml-dev libcpp-httplib-dev nlohmann-json3-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# A build/ directory copied from the host is ignored: this one builds in /build.
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DLEASE_AGENT_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" \
 && cmake --install /build --prefix /usr/local --strip

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpqxx-6.4 libpq5 libpugixml1v5 libcpp-httplib0.11 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin lease-agent
COPY --from=build /usr/local/bin/lease-agent /usr/local/bin/lease-agent
COPY config/agent.xml /etc/lease-agent/agent.xml
USER lease-agent
EXPOSE 8700
# SIGTERM is a clean stop: on-demote, then the lease is released at once.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8700/health || exit 1
ENTRYPOINT ["/usr/local/bin/lease-agent"]
CMD ["run", "-c", "/etc/lease-agent/agent.xml"]
