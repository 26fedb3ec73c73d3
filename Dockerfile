# volinit: the one-shot init container that gives volumes to a non-root, read-only service.
#
#   docker build -t volinit .
#   docker build -t volinit --build-arg BASE_IMAGE=volinit-base:bookworm .   # air-gapped
#
# The image is FROM scratch: the Python interpreter, the stdlib modules and shared libraries
# volinit really uses, PyYAML with its C loader, typer, volinit as bytecode, the shim and an
# /etc/passwd. No shell, no package manager, no pip: the one container that runs as root
# over user data carries nothing it does not run. What goes in is measured, not listed:
# image/minimal.py runs every command with the full install in the builder, records the
# modules, files and libraries each run used, copies exactly those, then runs every command
# again inside the copied tree and fails the build on any difference.
#
# The builder is any Debian-family Python image (glibc, apt, ldd): the official
# python:3.12-slim where a registry answers, the base scripts/docker-up builds with
# debootstrap where none does (python3 at /usr/bin there, at /usr/local/bin in the official
# one; minimal.py asks the interpreter, so neither path is written here).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# The libraries copied into the image come from here, so they get the distribution's
# security and point-release updates first; a base that lists only `bookworm main` (an old
# debootstrap) gets the two update sources added. An upgraded ca-certificates rebuilds the
# bundle from Debian's list alone: the certificates the base trusted (a TLS-intercepting
# proxy's, which an air-gapped base adds for pip) are appended again. binutils: strip, for
# the wheels' extension modules.
# hadolint ignore=DL3005,DL3008,SC1091
RUN . /etc/os-release \
    && if ! grep -rqs -- "${VERSION_CODENAME}-security" /etc/apt/sources.list /etc/apt/sources.list.d/; then \
         printf 'deb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
           "$VERSION_CODENAME" "$VERSION_CODENAME" >/etc/apt/sources.list.d/volinit-updates.list; \
       fi \
    && bundle=/etc/ssl/certs/ca-certificates.crt \
    && if [ -f "$bundle" ]; then cp "$bundle" /tmp/base-ca.crt; fi \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq >/dev/null \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && if [ -f /tmp/base-ca.crt ]; then cat /tmp/base-ca.crt >>"$bundle" && rm /tmp/base-ca.crt; fi \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The locked versions, each checked against its hash (make lock refreshes the file).
COPY requirements/image.lock requirements/
RUN python3 -m venv /opt/volinit \
    && /opt/volinit/bin/python -m pip install -q --no-compile --require-hashes -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY volinit/ volinit/
# pip and setuptools leave the venv before it is measured: nothing in the image installs
# anything, and setuptools' .pth would import _distutils_hack on every start.
RUN /opt/volinit/bin/python -m pip install -q --no-compile --no-deps . \
    && /opt/volinit/bin/python -m pip uninstall -q -y pip setuptools \
    && ln -s /opt/volinit/bin/volinit /usr/local/bin/volinit
# The shim, for service images: COPY --from=<volinit image> /usr/local/bin/volinit-entrypoint /usr/local/bin/
COPY entrypoint/volinit-entrypoint /usr/local/bin/volinit-entrypoint
COPY image/minimal.py image/
RUN chmod 0755 /usr/local/bin/volinit-entrypoint \
    && python3 image/minimal.py trace --manifest /src/manifest.json \
    && python3 image/minimal.py assemble --manifest /src/manifest.json --root /rootfs --smoke-dir /smoke \
         --copy /usr/local/bin/volinit /usr/local/bin/volinit-entrypoint

# Fail the build, not the first `compose up`: in a stage that is the image's tree and
# nothing else, every command, as root and as nobody, must behave as it did with the full
# install, and the label must say the version the code says. Exec form: there is no shell.
FROM scratch AS smoke
COPY --from=build /rootfs/ /
COPY --from=build /smoke/ /smoke/
ARG VERSION=0.1.0
RUN ["/opt/volinit/bin/python", "/smoke/minimal.py", "smoke", "--manifest", "/smoke/manifest.json"]

# The probe `volinit check` runs inside a copy of each service's container: static C, so it
# runs in images with no shell and no libc (distroless, FROM scratch) as any uid. Linked
# against musl: 50 KB, where a static glibc build is 690 KB of an image held to 16 MB.
FROM ${BASE_IMAGE} AS probe
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc musl-tools \
    && rm -rf /var/lib/apt/lists/*
COPY probe/volinit-probe.c /src/volinit-probe.c
RUN musl-gcc -static -Os -s -Wall -o /volinit-probe /src/volinit-probe.c \
    && /volinit-probe >/dev/null

FROM scratch
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="volinit" \
      org.opencontainers.image.description="Init container and entrypoint shim: make volumes and temp dirs usable by a non-root, read-only service" \
      org.opencontainers.image.source="https://github.com/volinit/volinit" \
      org.opencontainers.image.documentation="https://github.com/volinit/volinit#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# the tree the smoke stage ran every command in (its driver removed itself): that stage's
# whole filesystem is the image, which is the point of it
# hadolint ignore=DL3067
COPY --from=smoke / /
# Not run here: `volinit check` copies it out of this image into each probe container.
COPY --from=probe /volinit-probe /usr/local/lib/volinit/probe
# read_only: true is the normal way to run this image: nothing may try to write bytecode.
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The one container that must run as root: changing the owner of files another uid owns
# needs CAP_CHOWN, which only root holds. Run it with cap_drop: [ALL] and
# cap_add: [CHOWN, FOWNER, DAC_OVERRIDE] so root holds nothing else. Numeric, so admission
# policies that read the image's user (runAsNonRoot) see plainly that this one is root.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["volinit"]
CMD ["apply"]
