# dtensor-harness image for cuda.
# CUDA: PyTorch's own image (conda Python, CUDA and NCCL inside).
# Run with the NVIDIA container toolkit: `--gpus` comes from matrix.toml.
#
# Build it with `harness container build cuda-...` or `nox -s build-cuda`: the
# build args below come from matrix.toml (accelerators.cuda.container); the
# defaults here only make a bare `docker build` work. Context: the repo root.
# Classic builder compatible (DOCKER_BUILDKIT=0, podman): no RUN --mount.

ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime@sha256:db80a41f8428644cebcb3d75b0b62df334ab6c0e75785951eb25f48bfbd42407
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG ACCELERATOR=cuda
ARG TORCH=torch==2.13.0
ARG PIP_ARGS=""
ARG PYTHON=python
ARG VENDOR_TORCH=1
ARG HARNESS_UID=1000
ARG HARNESS_VERSION=0.0.0
# the repository the image is built from, for the OCI source label: pass
# --build-arg SOURCE=URL (empty by default: the kit has no public home yet)
ARG SOURCE=""

LABEL org.opencontainers.image.title="dtensor-harness (cuda)" \
      org.opencontainers.image.description="DTensor test harness for cuda" \
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
