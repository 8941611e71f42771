# syntax=docker/dockerfile:1
# The one image every seppo component runs on: KFP steps, the retraining CronJob,
# PyTorchJob training rounds and the GPU smoke test all use it.
#
#   docker build -t ghcr.io/seppo-ml/seppo:0.1.0 .
#
# Base image: pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime, chosen because it brings a
# CUDA build of torch with its CUDA 12.4 / cuDNN 9 user-space libraries (runs on any
# driver >= 550) and NCCL for multi-GPU and multi-node training, in the smaller
# "runtime" flavour (no compilers). seppo pins torch 2.13 for its CPU development wheel;
# inside this image the base image's CUDA torch is kept instead (see the install step).
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

ARG SEPPO_VERSION=0.1.0
ARG VCS_REF=
ARG BUILD_DATE=unknown

LABEL org.opencontainers.image.title="seppo" \
      org.opencontainers.image.description="SePPO preference optimization for diffusion models, as a Kubeflow pipeline" \
      org.opencontainers.image.version="${SEPPO_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/seppo-ml/seppo" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"

# No credentials here: S3/MLflow secrets come from Kubernetes Secrets at run time.
# HF_HUB_OFFLINE is deliberately left unset: whether the hub may be reached is the user's call.
# SEPPO_GIT_SHA: the commit the image was built from (--build-arg VCS_REF), which MLflow
# records on every run (the image has no .git to ask).
# PYTHONPATH: components/ and pipelines/ are importable (compiling and submitting the
# pipeline from inside the image) and presets resolve from /opt/seppo/pipelines/configs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    PYTHONPATH=/opt/seppo \
    SEPPO_GIT_SHA=${VCS_REF}

WORKDIR /opt/seppo
COPY requirements/constraints.txt requirements/constraints.txt
COPY pyproject.toml README.md ./
COPY seppo_lib/ seppo_lib/
COPY components/ components/
COPY pipelines/ pipelines/

# Install seppo with every dependency pinned, except torch: the torch== line is stripped
# from the constraints and replaced by the version already in the image, so pip keeps
# the CUDA build (or fails) instead of downloading another torch. sympy is stripped too
# because torch 2.6 requires exactly the sympy the image already has.
RUN set -eux; \
    torch_before="$(python -c 'import torch; print(torch.__version__)')"; \
    grep -v -E '^(torch|sympy)==' requirements/constraints.txt > /tmp/constraints.txt; \
    echo "torch==${torch_before%%+*}" >> /tmp/constraints.txt; \
    pip install --no-cache-dir -c /tmp/constraints.txt .; \
    torch_after="$(python -c 'import torch; print(torch.__version__)')"; \
    test "${torch_before}" = "${torch_after}"; \
    rm -rf /tmp/constraints.txt build seppo.egg-info; \
    seppo --version

# Non-root runtime user; its home is the working directory (relative paths such as
# seppo-runs/ land there; mount an emptyDir on it when the root filesystem is read-only).
RUN groupadd --gid 1000 seppo \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/seppo --shell /bin/bash seppo
USER 1000:1000
WORKDIR /home/seppo

ENTRYPOINT []
CMD ["seppo", "--help"]
