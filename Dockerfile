# The one image every batchery service runs: `batchery api`, `batchery worker`, and Flower through celery.
# Build for NVIDIA GPUs with --build-arg ONNXRUNTIME_GPU=<the pinned onnxruntime version> (PyTorch wheels
# from PyPI already carry CUDA); a GPU container also needs the NVIDIA Container Toolkit on the host.
FROM python:3.11-slim

ARG ONNXRUNTIME_GPU=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATCHERY_HOST=0.0.0.0 \
    BATCHERY_DATA_DIR=/data \
    HF_HUB_OFFLINE=1

RUN useradd --create-home --uid 1000 batchery && mkdir /data && chown batchery /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY batchery ./batchery
RUN pip install . \
    && if [ -n "$ONNXRUNTIME_GPU" ]; then pip uninstall -y onnxruntime && pip install "onnxruntime-gpu==$ONNXRUNTIME_GPU"; fi

USER batchery
VOLUME ["/data"]
EXPOSE 8000 9100 5555
ENTRYPOINT ["batchery"]
CMD ["api"]
