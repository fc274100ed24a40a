"""``kgnum plot``: training curves of saved runs, side by side (matplotlib, extra ``plot``)."""
from __future__ import annotations

import os

from .data import KGDataError


def plot_runs(model_dirs: list[str], out: str) -> None:
    """Valid MRR and loss against training time for each saved model directory."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KGDataError("kgnum plot needs matplotlib: pip install 'kgnum[plot]'") from None
    from .embeddings import load

    runs = []
    for path in model_dirs:
        stats = load(path).train_stats
        if not stats.get("history") and not stats.get("valid_history"):
            raise KGDataError(f"{path}: the saved model has no training history (saved by an older kgnum?)")
        runs.append((os.path.basename(os.path.normpath(path)), stats))
    fig, (ax_mrr, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for label, stats in runs:
        valid = stats.get("valid_history") or []
        if valid:
            ax_mrr.plot([v.get("train_seconds", 0) for v in valid], [v["valid_mrr"] for v in valid], marker="o",
                        ms=3, label=label)
        hist = stats.get("history") or []
        if hist:
            ax_loss.plot([h["seconds"] for h in hist], [h["loss"] for h in hist], label=label)
    ax_mrr.set_xlabel("training seconds")
    ax_mrr.set_ylabel("valid MRR (filtered, valid sample)")
    ax_loss.set_xlabel("training seconds")
    ax_loss.set_ylabel("mean loss per positive")
    for ax in (ax_mrr, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
