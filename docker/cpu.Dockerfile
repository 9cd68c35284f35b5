# dtensor-harness image for cpu.
# CPU: plain Debian plus CPU torch from the wheelhouse or the index.
# The gloo backend needs nothing else. Without registry access, make the base
# locally: docker/make-base-image.sh (debootstrap + import).
#
# Build it with `harness container build cpu-...` or `nox -s build-cpu`: the
# build args below come from matrix.toml (accelerators.cpu.container); the
# defaults here only make a bare `docker build` work. Context: the repo root.
# Classic builder compatible (DOCKER_BUILDKIT=0, podman): no RUN --mount.

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG ACCELERATOR=cpu
ARG TORCH=torch==2.13.0
ARG PIP_ARGS=""
# Without a wheelhouse, torch comes from here: PyPI's Linux torch is the CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PYTHON=python3
ARG VENDOR_TORCH=0
ARG HARNESS_UID=1000
ARG HARNESS_VERSION=0.0.0
# the repository the image is built from, for the OCI source label: pass
# --build-arg SOURCE=URL (empty by default: the kit has no public home yet)
ARG SOURCE=""

LABEL org.opencontainers.image.title="dtensor-harness (cpu)" \
      org.opencontainers.image.description="DTensor test harness for cpu" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${HARNESS_VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      dev.dtensor-harness.accelerator="${ACCELERATOR}" \
      dev.dtensor-harness.torch="${TORCH}"

COPY docker/install-harness.sh docker/entrypoint.sh /usr/local/lib/dtensor-harness/
COPY docker/wheelhouse /wheels
COPY pyproject.toml README.md* LICENSE* /src/
COPY harness /src/harness
COPY matrix.toml /harness/matrix.toml
RUN /usr/local/lib/dtensor-harness/install-harness.sh

ENV PATH=/opt/harness/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
USER ${HARNESS_UID}
WORKDIR /harness
ENTRYPOINT ["/usr/local/lib/dtensor-harness/entrypoint.sh"]
CMD ["doctor"]
