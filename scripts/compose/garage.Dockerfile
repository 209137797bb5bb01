# Stand-in for dxflrs/garage (FROM scratch, /garage only), made from the
# binary scripts/install-garage.sh builds: scripts/compose-check.sh copies it
# into the build context. A slim Debian base, because that binary links
# glibc dynamically.
FROM debian:bookworm-slim
COPY garage /garage
CMD ["/garage", "server"]
