"""Tuned hyperparameters per dataset and model (``kgnum train --preset NAME``).

The FB15k-237 values are the ones measured in bench/RESULTS.md; the README
lists them as a table.
"""
from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "fb15k-237": {
        "TransE_l2": dict(dim=400, neg=200, neg_chunk=200, batch=1000, lr=0.25, gamma=12.0, adv=True,
                          adv_temp=1.0, time_budget=300, workers=2),
        "DistMult": dict(dim=400, neg=200, neg_chunk=200, batch=1000, lr=0.1, gamma=12.0, adv=True,
                         adv_temp=1.0, reg_coef=1e-7, time_budget=600, workers=2),
        "ComplEx": dict(dim=400, neg=200, neg_chunk=200, batch=1000, lr=0.1, gamma=12.0, adv=True,
                        adv_temp=1.0, reg_coef=1e-7, time_budget=600, workers=2),
        "RotatE": dict(dim=400, neg=200, neg_chunk=200, batch=1000, lr=0.1, gamma=9.0, adv=True,
                       adv_temp=1.0, time_budget=900, workers=2),
    },
    "umls": {
        "ComplEx": dict(dim=200, neg=64, neg_chunk=64, batch=256, lr=0.1, gamma=12.0, adv=True,
                        adv_temp=1.0, time_budget=60),
    },
}


def preset_values(preset: str, model: str) -> dict:
    """Hyperparameters of ``preset`` for ``model`` (model name case-insensitive)."""
    table = PRESETS[preset.lower()]
    for name, values in table.items():
        if name.lower() == model.lower():
            return {"model": name, **values}
    raise ValueError(f"--preset {preset}: no tuned values for --model {model}; "
                     f"tuned models: {', '.join(table)}")
