# Multi-stage build: compile with the full toolchain, run on a small image as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, from the manifests alone with stand-in sources: this layer is rebuilt only
# when Cargo.toml or Cargo.lock change, not on every change to our code. The workspace's other
# members (the Ollama emulator and the tests' postgres-gate macro, both test dependencies) need
# their manifests and stand-ins to load.
COPY Cargo.toml Cargo.lock ./
COPY emulator/Cargo.toml emulator/
COPY tests/postgres-gate/Cargo.toml tests/postgres-gate/
RUN mkdir -p src emulator/src tests/postgres-gate/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs emulator/src/lib.rs tests/postgres-gate/src/lib.rs \
    && echo 'fn main() {}' > emulator/src/main.rs \
    && cargo build --release --locked --bin rovertchat \
    && rm -rf src emulator/src tests/postgres-gate/src

# Then our code. COPY keeps the files' own modification times, which can be older than the
# stand-ins' build: touching them makes cargo rebuild our crate rather than keep the stand-in.
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin rovertchat

FROM debian:bookworm-slim
# curl only for the health check; TLS roots are bundled in the binary (rustls + webpki roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home rovertchat
WORKDIR /app
COPY --from=build /src/target/release/rovertchat /usr/local/bin/rovertchat
RUN mkdir -p /app/data /app/logs && chown -R rovertchat:rovertchat /app
USER rovertchat
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/app/data \
    LOG_DIR=/app/logs \
    ENVIRONMENT=production
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/api/v1/health || exit 1
ENTRYPOINT ["rovertchat"]
CMD ["serve"]
