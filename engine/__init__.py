"""The engine: the language model loaded and run (torch, transformers, peft, bitsandbytes).

Loading the base model and the adapter (`models`), generating replies (`generation`, with the
decoding controls of `decoding`), in-flight batching for the service (`inflight`), and the CPU fast
paths (`packed_pass`, `packed_linear`, `fused_lora`). Built on the kernel (`base/`); nothing in the
kernel imports it.
"""
