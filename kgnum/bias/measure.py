"""Measuring social bias in any trained model (../shared/docs/BIAS.md, sections 1 and 3).

    sensitive relation r_s (gender, religion, ...): persons on one side, values on the other
      -> person side detected from the data (the side with more distinct entities), or forced
    per-target bias B_p (two values a, b, a target relation r_p such as profession):
      m_j = g(e_j, r_s, e_a) - g(e_j, r_s, e_b)                      for every person j at once
      e'_j = e_j + alpha * dm_j / de_j                               (the registry's NumPy grad)
      B_p = mean_j [ g(e'_j, r_p, e_p) - g(e_j, r_p, e_p) ]          persons x targets, in blocks
    difference in scores D_j: mean over (person, true value) of g(true) - mean g(other top-M values)
    probe: an MLP (scikit-learn) predicting the value from the person's row, 80/20 split, against
           the majority-class rate of the same held-out persons

Every score function works unchanged: scores and gradients come from its registry
entry (``score`` / ``grad``, broadcast over persons), with the person on whichever
side the data puts it. Names are the user's own strings; nothing assumes Freebase.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import KGDataError

ALPHA = 0.01  # the diagnostic's gradient step on the person (BIAS.md: alpha = 0.01)
TOP_M = 30  # candidate values per sensitive relation
MIN_PERSONS = 20  # targets with fewer persons are not reported
_BLOCK_FLOATS = 1 << 23  # persons x targets x dim float64 scored per block (64 MB)


@dataclass(frozen=True)
class Sensitive:
    """One sensitive relation as seen in the training triples."""
    relation: int
    name: str
    person_side: str  # "head" or "tail"
    persons: np.ndarray  # (n,) entity ids: the person of every training triple of the relation
    values: np.ndarray  # (n,) the value of the same triple
    top_values: np.ndarray  # (<= M,) the most frequent values, most frequent first
    graph: object = None  # the KnowledgeGraph whose ids these are
    top_m: int = TOP_M


def sensitive_relation(kg, name: str, person_side: str | None = None, top_m: int = TOP_M) -> Sensitive:
    """The training triples of relation ``name``, person side detected (or given), its top values."""
    from ..kernels.kl import sensitive_triples

    try:
        rel, side, persons, values, top = sensitive_triples(kg, name, "--sensitive", person_side, top_m)
    except ValueError as e:  # the same one-line message, as the data error it is
        raise KGDataError(str(e)) from None
    return Sensitive(rel, name, side, persons, values, top, kg, top_m)


def _for_model(emb, s: Sensitive) -> Sensitive:
    """``s`` with its ids those of ``emb``'s rows: read again from its graph aligned to the model by
    name when the graph numbers its entities otherwise (a shuffled train.txt, a resumed or grown model)."""
    if s.graph is None:
        return s
    kg = s.graph.aligned_to(emb.entity_names, emb.relation_names)
    return s if kg is s.graph else sensitive_relation(kg, s.name, s.person_side, s.top_m)


def _side_scores(emb, persons_rows, rel_rows, others_rows, person_side: str) -> np.ndarray:
    """g with the person on ``person_side``: persons (P, 1, d) against others (1, K, d) -> (P, K)."""
    sf, gamma = emb.score_function, emb.gamma
    if person_side == "head":
        return sf.score(persons_rows, rel_rows, others_rows, gamma)
    return sf.score(others_rows, rel_rows, persons_rows, gamma)


def _person_grad(emb, persons_rows, rel_rows, others_rows, person_side: str) -> np.ndarray:
    grads = emb.score_function.grad(*((persons_rows, rel_rows, others_rows) if person_side == "head"
                                      else (others_rows, rel_rows, persons_rows)), emb.gamma)
    return grads[0] if person_side == "head" else grads[2]


def _rows(emb, ids) -> np.ndarray:
    return emb.entity[np.asarray(ids)].astype(np.float64)


def _scores_against(emb, P: np.ndarray, rel: int, targets: np.ndarray, person_side: str) -> np.ndarray:
    """(P persons, T targets) scores, in blocks of persons so memory stays bounded."""
    r = emb.relation[rel].astype(np.float64)[None, None, :]
    X = _rows(emb, targets)[None, :, :]
    out = np.empty((P.shape[0], targets.shape[0]))
    block = max(1, _BLOCK_FLOATS // max(1, targets.shape[0] * max(P.shape[1], r.shape[-1])))
    for a in range(0, P.shape[0], block):
        out[a:a + block] = _side_scores(emb, P[a:a + block, None, :], r, X, person_side)
    return out


def target_bias(emb, kg, sensitive: Sensitive, value_a: str, value_b: str, target: str,
                alpha: float = ALPHA, min_persons: int = MIN_PERSONS, target_side: str | None = None) -> dict:
    """B_p of every target entity of relation ``target`` with >= ``min_persons`` persons.

    Returns {"targets": [{"entity", "bias", "counts": {a: C_a, b: C_b}, "persons"}...] sorted by bias
    (toward a first), "mean_abs_bias_over_alpha", "spearman_rho", "persons", "alpha"}.
    """
    kg = kg.aligned_to(emb.entity_names, emb.relation_names)  # ids as the model's rows, matched by name
    sensitive = _for_model(emb, sensitive)
    a, b = (_value_id(kg, sensitive, v) for v in (value_a, value_b))
    if a == b:
        raise KGDataError(f"--values {value_a},{value_b}: two different values are needed")
    try:
        t_rel = kg.relation_id(target)
    except KGDataError:
        raise KGDataError(f"--target {target}: no such relation in graph {kg.name!r}") from None
    tt = kg.train[kg.train[:, 1] == t_rel]
    person_set = np.unique(sensitive.persons)
    if target_side is None:  # the side of the target relation where the sensitive persons are
        target_side = "head" if np.isin(tt[:, 0], person_set).sum() >= np.isin(tt[:, 2], person_set).sum() \
            else "tail"
    t_persons, t_values = (tt[:, 0], tt[:, 2]) if target_side == "head" else (tt[:, 2], tt[:, 0])
    known = np.isin(t_persons, person_set)
    if not known.any():
        raise KGDataError(f"--target {target}: no person of --sensitive {sensitive.name} has a "
                          f"{target} triple")
    # targets held by at least min_persons distinct persons (of any kind)
    pairs = np.unique(np.stack([t_values, t_persons], axis=1), axis=0)
    targets, n_persons = np.unique(pairs[:, 0], return_counts=True)
    targets = targets[n_persons >= min_persons]
    t_persons, t_values = t_persons[known], t_values[known]
    if targets.size == 0:
        raise KGDataError(f"--target {target}: no target has >= {min_persons} persons")
    # every person of the sensitive relation, one gradient step each (vectorized over persons)
    persons = person_set
    P = _rows(emb, persons)
    r_s = emb.relation[sensitive.relation].astype(np.float64)[None, :]
    E_a, E_b = _rows(emb, [a]), _rows(emb, [b])
    grad = (_person_grad(emb, P, r_s, E_a, sensitive.person_side)
            - _person_grad(emb, P, r_s, E_b, sensitive.person_side))
    before = _scores_against(emb, P, t_rel, targets, target_side)
    after = _scores_against(emb, P + alpha * grad, t_rel, targets, target_side)
    bias = (after - before).mean(axis=0)
    # counts: persons with value a (resp. b) holding each target
    value_of = {}
    for p, v in zip(sensitive.persons.tolist(), sensitive.values.tolist()):
        value_of.setdefault(p, set()).add(v)
    c_a = np.zeros(targets.size, np.int64)
    c_b = np.zeros(targets.size, np.int64)
    index = {t: i for i, t in enumerate(targets.tolist())}
    for p, t in set(zip(t_persons.tolist(), t_values.tolist())):
        i = index.get(t)
        if i is not None:
            vals = value_of.get(p, ())
            c_a[i] += a in vals
            c_b[i] += b in vals
    from scipy.stats import spearmanr

    ratio = np.log((c_a + 1) / (c_b + 1))
    # undefined (None) for fewer than three targets, or when either side is constant
    rho = float(spearmanr(bias, ratio).statistic) if targets.size > 2 and np.ptp(bias) > 0 and np.ptp(ratio) > 0 \
        else None
    order = np.argsort(-bias, kind="stable")
    names = (str(kg.entity_names[a]), str(kg.entity_names[b]))
    rows = [{"entity": str(kg.entity_names[targets[i]]), "bias": float(bias[i]),
             "counts": {names[0]: int(c_a[i]), names[1]: int(c_b[i])}} for i in order]
    return {"targets": rows, "mean_abs_bias_over_alpha": float(np.abs(bias).mean() / alpha),
            "spearman_rho": rho, "persons": int(persons.size), "alpha": alpha,
            "values": list(names), "target": target}


def _value_id(kg, sensitive: Sensitive, value: str) -> int:
    try:
        v = kg.entity_id(value)
    except KGDataError:
        raise KGDataError(f"--values {value}: no such entity in graph {kg.name!r}") from None
    if not np.any(sensitive.values == v):
        raise KGDataError(f"--values {value}: not a value of --sensitive {sensitive.name}")
    return v


def difference_in_scores(emb, sensitive: Sensitive) -> float:
    """D_j: mean over (person, true value in the top M) of g(true) - mean g(other top-M values)."""
    sensitive = _for_model(emb, sensitive)
    keep = np.isin(sensitive.values, sensitive.top_values)
    persons, values = sensitive.persons[keep], sensitive.values[keep]
    if persons.size == 0:
        raise KGDataError(f"--sensitive {sensitive.name}: no person has one of its top values")
    S = _scores_against(emb, _rows(emb, persons), sensitive.relation, sensitive.top_values,
                        sensitive.person_side)
    col = {v: i for i, v in enumerate(sensitive.top_values.tolist())}
    true_idx = np.array([col[v] for v in values.tolist()])
    true = S[np.arange(S.shape[0]), true_idx]
    others = (S.sum(axis=1) - true) / (S.shape[1] - 1)
    return float((true - others).mean())


def probe(emb, sensitive: Sensitive, seed: int = 0) -> dict:
    """MLP probe accuracy on held-out persons (80/20) against the majority-class rate there."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from ..kernels.kl import person_labels

    sensitive = _for_model(emb, sensitive)

    # one label per person (the rank of its most frequent value), persons in the order of their names:
    # the split, and so the accuracy, do not depend on how the graph's files order or number them
    ids, labels = person_labels(sensitive.persons, sensitive.values, sensitive.top_values)
    by_name = np.argsort(np.asarray(emb.entity_names)[ids].astype(str), kind="stable")
    ids, labels = ids[by_name], labels[by_name]
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size < 2 or ids.size < 10:
        raise KGDataError(f"--sensitive {sensitive.name}: too few persons with two or more values to probe")
    rare = classes[counts < 2]  # a stratified split needs two of each class
    mask = ~np.isin(labels, rare)
    X, y = emb.entity[ids[mask]].astype(np.float32), labels[mask]
    n_classes = classes.size - rare.size
    if int(np.ceil(0.2 * y.size)) < n_classes or y.size - int(np.ceil(0.2 * y.size)) < n_classes:
        raise KGDataError(f"--sensitive {sensitive.name}: {y.size} persons are too few to probe {n_classes} "
                          f"values with an 80/20 split (each part needs one person of every value); "
                          f"lower --top-m")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    # early stopping on a tenth of the training persons: the probe converges in a few dozen epochs
    clf = MLPClassifier(hidden_layer_sizes=(300,), max_iter=200, early_stopping=True, n_iter_no_change=8,
                        random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning on tiny graphs says nothing useful
        clf.fit(X_train, y_train)
    accuracy = float((clf.predict(X_test) == y_test).mean())
    _, test_counts = np.unique(y_test, return_counts=True)
    return {"accuracy": accuracy, "majority": float(test_counts.max() / y_test.size),
            "persons": int(y.size), "classes": int(np.unique(y).size)}


def read_display_names(path: str) -> dict[str, str]:
    """``entity<TAB>display name`` lines (e.g. FB15k-237's entity_names.tsv). As in the loaders, a
    byte-order mark is skipped and lines end at "\\n" (a CRLF's "\\r" dropped): an entity name may
    hold a lone "\\r"."""
    names = {}
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.removesuffix("\n").removesuffix("\r").split("\t")
                if len(parts) < 2:
                    raise KGDataError(f"{path}:{n}: expected entity<TAB>name")
                names[parts[0]] = parts[1]
    except FileNotFoundError:
        raise KGDataError(f"--names {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise KGDataError(f"--names {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return names


def plot_targets(result: dict, path: str, top: int = 15, names: dict | None = None) -> None:
    """Bar chart of the targets most biased toward each value (matplotlib, extra ``plot``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KGDataError("--plot needs matplotlib: pip install 'kgnum[plot]'") from None
    rows = result["targets"]
    shown = rows[:top] + [r for r in rows[-top:] if r not in rows[:top]]
    labels = [(names or {}).get(r["entity"], r["entity"]) for r in shown]
    values = [r["bias"] for r in shown]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(shown))))
    ax.barh(range(len(shown))[::-1], values, color=["tab:blue" if v > 0 else "tab:red" for v in values])
    ax.set_yticks(range(len(shown))[::-1], labels, fontsize=7)
    a, b = result["values"]
    ax.set_xlabel(f"B_p: toward {(names or {}).get(a, a)} (right) or {(names or {}).get(b, b)} (left)")
    ax.set_title(f"{result['target']}: per-target bias, alpha {result['alpha']:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
