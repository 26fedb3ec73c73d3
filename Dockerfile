# volinit: the one-shot init container that gives volumes to a non-root, read-only service.
#
#   docker build -t volinit .
#   docker build -t volinit --build-arg BASE_IMAGE=volinit-base:bookworm .   # air-gapped
#
# Slim rather than alpine: slim is glibc, so manylinux wheels (PyYAML's C loader, which
# reads a spec several times faster than the pure-Python one) install as wheels instead of
# compiling; and slim is Debian, the same family as the base scripts/docker-up builds with
# debootstrap where no registry answers, so one Dockerfile serves both.
# Only `python3 -m pip` / `python3 -m venv` below: the debootstrap base has no `python`.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The venv is what ships; the base's own pip and site-packages stay untouched.
RUN python3 -m venv /opt/volinit
COPY pyproject.toml ./
COPY volinit/ volinit/
COPY entrypoint/volinit-entrypoint /stage/bin/volinit-entrypoint
# Core dependencies only (PyYAML, typer); docker and testcontainers are host-side extras.
# Bytecode is compiled here, as unchecked-hash so Python never compares it with the source:
# the container is read-only and sets PYTHONDONTWRITEBYTECODE, so a .pyc judged stale would
# be recompiled in memory on every start, and an init container starts on every `compose up`.
# pip and setuptools leave the venv: nothing in the image installs anything. So do rich and
# the two packages only rich needs (12.6 MB of the image's 16.5): typer requires rich, but
# the CLI sets rich_markup_mode=None and none of its paths imports it (help and usage
# errors are plain click output either way, and tests/test_image.py compares them).
RUN /opt/volinit/bin/python -m pip install --no-compile . \
    && /opt/volinit/bin/python -m pip uninstall -q -y pip setuptools rich pygments markdown-it-py mdurl \
    && /opt/volinit/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/volinit/lib \
    && ln -s /opt/volinit/bin/volinit /stage/bin/volinit \
    && chmod 0755 /stage/bin/volinit-entrypoint

# The probe `volinit check` runs inside a copy of each service's container: static C, so it
# runs in images with no shell and no libc (distroless, FROM scratch) as any uid.
FROM ${BASE_IMAGE} AS probe
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY probe/volinit-probe.c /src/volinit-probe.c
RUN gcc -static -Os -s -Wall -o /volinit-probe /src/volinit-probe.c \
    && /volinit-probe >/dev/null

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="volinit" \
      org.opencontainers.image.description="Init container and entrypoint shim: make volumes and temp dirs usable by a non-root, read-only service" \
      org.opencontainers.image.source="https://github.com/volinit/volinit" \
      org.opencontainers.image.documentation="https://github.com/volinit/volinit#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# read_only: true is the normal way to run this image: nothing may try to write bytecode.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/volinit /opt/volinit
# `volinit` (a link into the venv) and the shim, which service images take with
# COPY --from=<volinit image> /usr/local/bin/volinit-entrypoint /usr/local/bin/
COPY --from=build /stage/bin/ /usr/local/bin/
# Not run here: `volinit check` copies it out of this image into each probe container.
COPY --from=probe /volinit-probe /usr/local/lib/volinit/probe
# Fail the build, not the first `compose up`: the CLI starts, its heaviest command parses
# its options, the shim runs a command, and the label says the version the code says.
RUN volinit --version \
    && volinit apply --help >/dev/null \
    && volinit-entrypoint true \
    && test "$(volinit --version)" = "volinit ${VERSION}"
# The one container that must run as root: changing the owner of files another uid owns
# needs CAP_CHOWN, which only root holds. Run it with cap_drop: [ALL] and
# cap_add: [CHOWN, FOWNER, DAC_OVERRIDE] so root holds nothing else. Numeric, so admission
# policies that read the image's user (runAsNonRoot) see plainly that this one is root.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["volinit"]
CMD ["apply"]
