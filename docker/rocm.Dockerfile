# dtensor-harness image for rocm.
# ROCm: AMD's image, whose torch is ROCm's build (it answers to "cuda", RCCL
# under the nccl name). /dev/kfd and /dev/dri come from matrix.toml's run_flags.
#
# Build it with `harness container build rocm-...` or `nox -s build-rocm`: the
# build args below come from matrix.toml (accelerators.rocm.container); the
# defaults here only make a bare `docker build` work. Context: the repo root.
# Classic builder compatible (DOCKER_BUILDKIT=0, podman): no RUN --mount.

ARG BASE_IMAGE=rocm/pytorch:rocm7.2.4_ubuntu24.04_py3.12_pytorch_release_2.10.0@sha256:4449f856653602317e4101a76fce599c7fcd58ccec2e539951fce5f73083179e
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG ACCELERATOR=rocm
ARG TORCH=torch==2.10.0
ARG PIP_ARGS=""
ARG PYTHON=python3
ARG VENDOR_TORCH=1
ARG HARNESS_UID=1000
ARG HARNESS_VERSION=0.0.0
# the repository the image is built from, for the OCI source label: pass
# --build-arg SOURCE=URL (empty by default: the kit has no public home yet)
ARG SOURCE=""

LABEL org.opencontainers.image.title="dtensor-harness (rocm)" \
      org.opencontainers.image.description="DTensor test harness for rocm" \
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
