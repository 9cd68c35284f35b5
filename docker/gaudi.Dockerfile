# dtensor-harness image for gaudi.
# Intel Gaudi: Habana's image (SynapseAI, Habana's torch, hccl). Runs under
# the habana container runtime (`--runtime=habana` in matrix.toml).
#
# Build it with `harness container build gaudi-...` or `nox -s build-gaudi`: the
# build args below come from matrix.toml (accelerators.gaudi.container); the
# defaults here only make a bare `docker build` work. Context: the repo root.
# Classic builder compatible (DOCKER_BUILDKIT=0, podman): no RUN --mount.

ARG BASE_IMAGE=vault.habana.ai/gaudi-docker/1.22.2/ubuntu24.04/habanalabs/pytorch-installer-2.7.1:1.22.2-32
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG ACCELERATOR=gaudi
ARG TORCH=torch==2.7.1
ARG PIP_ARGS=""
ARG PYTHON=python3
ARG VENDOR_TORCH=1
ARG HARNESS_UID=1000
ARG HARNESS_VERSION=0.0.0
# the repository the image is built from, for the OCI source label: pass
# --build-arg SOURCE=URL (empty by default: the kit has no public home yet)
ARG SOURCE=""

LABEL org.opencontainers.image.title="dtensor-harness (gaudi)" \
      org.opencontainers.image.description="DTensor test harness for gaudi" \
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

# Habana writes logs under $HOME or /var/log by default; neither is the
# non-root user's to write.
ENV HABANA_LOGS=/tmp/habana_logs
ENV PATH=/opt/harness/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTEST_ADDOPTS="-p no:cacheprovider"
USER ${HARNESS_UID}
WORKDIR /harness
ENTRYPOINT ["/usr/local/lib/dtensor-harness/entrypoint.sh"]
CMD ["doctor"]
