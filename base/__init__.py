"""The kernel every stage shares, light and without torch: errors, settings, the prompt, the reply
checks and figures, file I/O, CLI helpers and what an adapter records. The model itself (loading,
generation, decoding) is the engine's (`engine/`)."""
