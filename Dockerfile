# syntax=docker/dockerfile:1
# tracegate: build with the official Swift image, run in a slim Debian image as a non-root user.
#   docker build -t tracegate .
#   docker run -p 8080:8080 -e TRACEGATE_UPSTREAM=http://backend:8000 tracegate

FROM swift:6.3-bookworm AS build
WORKDIR /src
# Resolve dependencies first so this layer is cached while only sources change.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
# Without run-time exclusivity checks in SwiftNIO too (tracegate's own modules leave them out in
# release builds, see Package.swift): 4-7% less CPU per request.
RUN swift build -c release --product tracegate --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/tracegate" /out/tracegate

FROM debian:bookworm-slim
# ca-certificates: verifying https upstreams; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tracegate \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/tracegate
COPY --from=build /out/tracegate /usr/local/bin/tracegate
COPY proxy.conf.example /etc/tracegate/proxy.conf.example

USER 10001:10001
# The admin listener must be reachable by the health check inside the container only.
# Traces the tracking server cannot take yet wait in the spool; without MLFLOW_TRACKING_URI they go
# to the trace file. Mount a volume on /var/lib/tracegate (one per container) to keep both.
ENV TRACEGATE_LISTEN=0.0.0.0:8080 \
    TRACEGATE_ADMIN_LISTEN=127.0.0.1:9090 \
    TRACEGATE_SPOOL_DIR=/var/lib/tracegate/spool \
    TRACEGATE_TRACE_FILE=/var/lib/tracegate/traces.jsonl
WORKDIR /var/lib/tracegate
VOLUME /var/lib/tracegate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tracegate"]
CMD ["run"]
