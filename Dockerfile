# One image for the API, the Celery workers and the Dask scheduler and workers: the command
# picks the role (see docker-compose.yml and k8s/).
#
#   docker build -t landmark .                                          # CPU TensorFlow
#   docker build --build-arg TENSORFLOW="tensorflow[and-cuda]" --build-arg EXTRAS="mkl,gpu" -t landmark:gpu .
#   docker build --build-arg DELF_MODEL_URL="https://tfhub.dev/google/delf/1?tf-hub-format=compressed" \
#                -t landmark:delf .                                     # DELF baked in
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TENSORFLOW=tensorflow
ARG DELF_MODEL_URL=""
# gpu adds PyTorch, for LANDMARK_DEVICE=cuda on the Dask workers.
ARG EXTRAS=mkl
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/landmark
ENV PATH=/opt/landmark/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY landmark ./landmark
COPY workers ./workers
# TensorFlow first, so that the GPU flavour is the one the package's requirement finds.
RUN pip install "${TENSORFLOW}" && pip install ".[${EXTRAS}]" \
 && find /opt/landmark -name "__pycache__" -prune -exec rm -rf {} + \
 && find /opt/landmark -name "tests" -path "*site-packages/*" -prune -exec rm -rf {} +
# The DELF SavedModel, when asked for: unpacked to /opt/models/delf (empty otherwise).
RUN mkdir -p /opt/models/delf && if [ -n "${DELF_MODEL_URL}" ]; then \
      python -c "import sys, tarfile, urllib.request; \
tarfile.open(fileobj=urllib.request.urlopen(sys.argv[1]), mode='r|gz').extractall('/opt/models/delf')" \
      "${DELF_MODEL_URL}"; fi

FROM python:${PYTHON_VERSION}-slim
ARG DELF_MODEL_URL=""
RUN useradd --uid 10001 --user-group --create-home --home-dir /var/lib/landmark landmark
COPY --from=build /opt/landmark /opt/landmark
COPY --from=build /opt/models /opt/models
# LANDMARK_DELF_MODEL points at the baked model only when one was baked; otherwise DELF comes
# from TF-Hub at start (where the internet is reachable) or RootSIFT is used.
ENV PATH=/opt/landmark/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LANDMARK_HOME=/var/lib/landmark \
    LANDMARK_DELF_MODEL=${DELF_MODEL_URL:+/opt/models/delf}
USER 10001
WORKDIR /var/lib/landmark
EXPOSE 8000
# The API's health; worker and Dask containers replace this check (compose) or use probes (k8s).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"
CMD ["landmark", "serve", "--host", "0.0.0.0", "--port", "8000"]
