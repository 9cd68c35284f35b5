# dtensor-harness image for xpu.
# Intel XPU: Intel's oneAPI runtime image, with PyTorch's own XPU wheels on it
# (download.pytorch.org/whl/xpu: they carry oneCCL for the xccl backend). Intel's
# extension for PyTorch stopped releasing after 2.8, so its images are not used.
# /dev/dri comes from matrix.toml's run_flags.
#
# Build it with `harness container build xpu-...` or `nox -s build-xpu`: the
# build args below come from matrix.toml (accelerators.xpu.container); the
# defaults here only make a bare `docker build` work. Context: the repo root.
# Classic builder compatible (DOCKER_BUILDKIT=0, podman): no RUN --mount.

ARG BASE_IMAGE=intel/deep-learning-essentials:2025.3.2-0-devel-ubuntu24.04
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG ACCELERATOR=xpu
ARG TORCH=torch==2.11.0
ARG PIP_ARGS=""
ARG PYTHON=python3
ARG VENDOR_TORCH=0
ARG HARNESS_UID=1000
ARG HARNESS_VERSION=0.0.0
# the repository the image is built from, for the OCI source label: pass
# --build-arg SOURCE=URL (empty by default: the kit has no public home yet)
ARG SOURCE=""

LABEL org.opencontainers.image.title="dtensor-harness (xpu)" \
      org.opencontainers.image.description="DTensor test harness for xpu" \
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
