"""Labels that tell runs apart: a chart or table draws one bar or line per label, so two runs
that share a label would be drawn as one (and the other's value lost)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

SEP = " · "


def unique_labels(parts: Sequence[Sequence[str]], always: int = 1) -> list[str]:
    """One label per item from its ordered ``parts``: the first ``always`` parts, then each
    further part, in order, for the items whose labels are still shared and that the part
    tells apart. Items whose every part is the same are numbered (#1, #2)."""
    labels = [[p for p in item[:always] if p] for item in parts]
    width = max((len(item) for item in parts), default=0)
    for i in range(always, width):
        current = [SEP.join(label) for label in labels]
        shared = {text for text, n in Counter(current).items() if n > 1}
        if not shared:
            break
        for text in shared:
            members = [j for j, label in enumerate(current) if label == text]
            values = [parts[j][i] if i < len(parts[j]) else "" for j in members]
            if len(set(values)) > 1:
                for j, value in zip(members, values, strict=True):
                    if value:
                        labels[j].append(value)
    out = [SEP.join(label) for label in labels]
    counts = Counter(out)
    seen: Counter[str] = Counter()
    for j, text in enumerate(out):
        if counts[text] > 1:
            seen[text] += 1
            out[j] = f"{text} #{seen[text]}"
    return out
