# The Millrace image: one binary, every role (server, worker, gateway,
# migrate; the Helm chart picks one with args).
#
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/millrace/millrace:0.1.0 .
#
# The binary is built by scripts/build.sh, exactly as CI builds and tests it
# (deploy/image/image_test.go reads this file to check that the build line
# below stays the script's). cgo is on: DuckDB is C++.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN scripts/build.sh /out/millrace

# glibc (the binary links libstdc++ for DuckDB, so not distroless/static),
# CA certificates for HTTPS, warehouses and OIDC, and time zones for cron
# schedules and the tools' date handling.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/millrace \
 && chown 65532:65532 /var/lib/millrace
COPY --from=build /out/millrace /usr/local/bin/millrace
# Relative paths (MILLRACE_RESULTS_DIR, PRE_AGGREGATE_DIR) land here; the
# chart mounts a volume over it and /tmp (the root file system is read-only).
WORKDIR /var/lib/millrace
ENV HOME=/var/lib/millrace
# Non-root, the uid distroless calls nonroot; the chart's securityContext
# uses the same.
USER 65532:65532
# 8082 server API, 8090 gateway, 9090 worker metrics and /healthz.
EXPOSE 8082 8090 9090
ENTRYPOINT ["/usr/local/bin/millrace"]
CMD ["--help"]
