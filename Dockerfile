# Tessera: build with the Rust toolchain, run on a slim Debian as an unprivileged user.
#   docker build -t tessera .
#   docker run -e TESSERA_MASTER_KEY=... -e TESSERA_DATABASE_URL=... -p 8080:8080 tessera
# (docker-compose.yml wires it to Postgres and Redis.)

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts (BuildKit) keep the registry and incremental build between image builds; the binary is
# copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin tessera \
 && install -m 0755 target/dist/tessera /usr/local/bin/tessera

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid tessera --home-dir /var/lib/tessera --create-home \
      --shell /usr/sbin/nologin tessera \
 && install -d -o tessera -g tessera -m 0700 /var/lib/tessera/state
COPY --from=builder /usr/local/bin/tessera /usr/local/bin/tessera
USER 10001:10001
# The working directory is writable: without TESSERA_MASTER_KEY the service keeps a (loudly warned about)
# development key under .tessera/ here, or where TESSERA_MASTER_KEY_FILE says (docker-compose.yml points
# it into the state/ volume, which the image creates owned by the service's user).
WORKDIR /var/lib/tessera
ENV TESSERA_BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
