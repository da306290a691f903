"""Stages: what the DAG tasks run (training pipeline, promotion, publishing, the operational DAGs' stages)."""


def item_ranges(n: int, size: int) -> list[dict[str, int]]:
    """Contiguous catalog ranges of `size` items (0 or less = one range), one mapped task each:
    [{"index", "start", "stop"}, ...]; an empty catalog is one empty range."""
    size = n if size <= 0 else size
    return [{"index": i, "start": start, "stop": min(start + size, n)} for i, start in enumerate(range(0, max(n, 1), max(size, 1)))]
