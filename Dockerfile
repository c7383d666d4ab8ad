# berth in a scratch image: one static binary, a non-root user, data in /data.
#
#   docker build -t berth .
#   docker run -d --name berth -p 8080:8080 -p 20000-20099:20000-20099 \
#     -v berth-data:/data berth
#   docker logs berth                      # the one-time setup URL
#   docker exec -it berth /berth admin create-user alice --crew home --role owner --data /data

# --- build: the static binary (glibc, crt-static), as scripts/check-static.sh builds it
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic;
# the getrandom cfg makes it call glibc's getrandom() instead of looking it up with
# dlsym (impossible when static) and falling back to /dev/urandom.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked --target "$target" \
 && cp "target/$target/release/berth" /berth \
 && /berth --version
# What scratch lacks: a passwd entry for the user and a data directory it owns.
RUN mkdir -p /rootfs/etc /rootfs/data /rootfs/tmp \
 && echo 'berth:x:10001:10001:berth:/data:/berth' > /rootfs/etc/passwd \
 && echo 'berth:x:10001:' > /rootfs/etc/group \
 && chown 10001:10001 /rootfs/data \
 && chmod 0700 /rootfs/data \
 && chmod 1777 /rootfs/tmp

# --- run: nothing but the binary
FROM scratch
COPY --from=build /rootfs/etc /etc
COPY --from=build /rootfs/tmp /tmp
COPY --from=build --chown=10001:10001 /rootfs/data /data
COPY --from=build /berth /berth
USER 10001:10001
ENV HOME=/data
VOLUME /data
# 8080 HTTP (API, dashboard, tunnels), 8443 TLS (with --tls-cert/--tls-key),
# 20000-20099 TCP tunnels.
EXPOSE 8080 8443 20000-20099
ENTRYPOINT ["/berth", "server", "--data", "/data"]
