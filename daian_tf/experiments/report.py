"""Experiment report: a results dict → markdown tables, `results.json` and PNG figures.

The results dict and its summary are described in `experiments.summary`, the figures
in `experiments.figures`; this module writes the markdown sections and the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from daian_tf.core.names import METRIC_NAMES
from daian_tf.experiments.figures import FIGURES, PlotSkipped, save_png
from daian_tf.experiments.summary import (JS_KEYS, RELA_IMPR_METRICS, Stat, SummaryRow,
                                          as_float, base_row, group_sort_key,
                                          main_base_row, safe_rela_impr, summarize)

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


# --------------------------------------------------------------------------- markdown


def _fmt_stat(stat: Optional[Stat], digits: int = 4) -> str:
    if stat is None or stat.count == 0:
        return "—"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _fmt_pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def _fmt_rela(row: SummaryRow, metric: str) -> str:
    if row.is_base:
        return "base"
    text = _fmt_pct(row.rela_impr[metric])
    paired = row.paired_rela_impr[metric]
    if paired is not None:
        text += f" (paired {paired.mean:+.2f} ± {paired.std:.2f}%)"
    return text


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def _ranking_section(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                     ) -> List[str]:
    base = results.get("base_variant")
    lines = ["## Ranking metrics", ""]
    if not rows:
        return lines + ["No runs in the results.", ""]
    body = [[r.variant, str(r.num_levels), str(len(r.seeds))]
            + [_fmt_stat(r.metrics[m]) for m in METRIC_NAMES]
            + [_fmt_rela(r, m) for m in RELA_IMPR_METRICS] for r in rows]
    ref_base = main_base_row(rows)
    references = results.get("reference_rows") or []
    for ref in references:
        values = {m: as_float(ref.get("metrics", {}).get(m)) for m in METRIC_NAMES}
        rela = [safe_rela_impr(values[m], ref_base.metrics[m].mean)
                if ref_base is not None else None for m in RELA_IMPR_METRICS]
        body.append([f"{ref.get('name', '?')} (reference)", "—", "—"]
                    + [f"{values[m]:.4f}" for m in METRIC_NAMES]
                    + [_fmt_pct(x) for x in rela])
    header = ["model", "n", "seeds", "AUC mean ± std", "GAUC mean ± std",
              "logloss mean ± std", "RelaImpr AUC", "RelaImpr GAUC"]
    lines += _table(header, body)
    lines += ["", "Mean ± sample standard deviation over seeds. RelaImpr = "
              "((metric − 0.5) / (metric_base − 0.5) − 1) × 100% against "
              f"`{base}` at the same n (or at its only n), from the means over seeds; "
              "*paired* is the mean ± std over seeds of the per-seed RelaImpr against "
              "the base run with the same seed."]
    if references and ref_base is not None:
        lines[-1] += (" Reference rows are single evaluations, compared with "
                      f"`{base}` at n = {ref_base.num_levels}.")
    if not any(r.is_base for r in rows):
        lines += ["", f"The base variant `{base}` has no runs: RelaImpr is not computed."]
    total = sum(r.train_seconds.mean * r.train_seconds.count for r in rows
                if r.train_seconds.count)
    lines += ["", f"Training time: {total:.0f} s over "
              f"{sum(len(r.seeds) for r in rows)} runs.", ""]
    return lines


def _intent_section(rows: Sequence[SummaryRow]) -> List[str]:
    lines = ["## Intent precision (JS divergence)", ""]
    intent_rows = [r for r in rows if r.intent]
    if not intent_rows:
        return lines + ["Skipped: no run reports an intent distribution.", ""]
    lines += ["Jensen–Shannon divergence between the predicted intent distribution p̂ "
              "and the intent label, per request, averaged; natural log (nats, at most "
              "ln 2 ≈ 0.693), lower is better; mean ± std over seeds.", ""]
    body = [[r.variant, str(r.num_levels), str(r.intent[JS_KEYS[0]].count)]
            + [_fmt_stat(r.intent[k]) for k in JS_KEYS] for r in intent_rows]
    lines += _table(["model", "n", "seeds", "JS specific", "JS broad", "JS all"], body)
    return lines + [""]


def _diversity_section(results: Mapping[str, Any], rows: Sequence[SummaryRow]
                       ) -> List[str]:
    lines = ["## GAUC by intent-diversity group", ""]
    group_rows = [r for r in rows if r.gauc_by_diversity]
    if not group_rows:
        return lines + ["Skipped: no run reports GAUC by intent-diversity group.", ""]
    base = results.get("base_variant")
    groups = sorted({g for r in group_rows for g in r.gauc_by_diversity},
                    key=group_sort_key)
    body = []
    for row in group_rows:
        row_base = base_row(rows, row.base_num_levels)
        cells = [row.variant, str(row.num_levels)]
        for g in groups:
            stat = row.gauc_by_diversity.get(g)
            if stat is None:
                cells.append("—")
                continue
            cell = f"{stat.mean:.4f}"
            base_stat = row_base.gauc_by_diversity.get(g) if row_base else None
            if base_stat is not None:
                cell += f" ({stat.mean - base_stat.mean:+.4f})"
            cells.append(cell)
        body.append(cells)
    lines += ["GAUC within each group of requests by intent diversity (distinct leaf "
              "categories among a request's clicks that differ from the trigger's), mean "
              f"over seeds; in parentheses the difference from `{base}`.", ""]
    lines += _table(["model", "n"] + [f"diversity {g}" for g in groups], body)
    return lines + [""]


def _throughput_section(rows: Sequence[SummaryRow]) -> List[str]:
    lines = ["## Training throughput", ""]
    timed = [r for r in rows if r.samples_per_second.count]
    if not timed:
        return lines + ["Skipped: no run reports its throughput.", ""]
    lines += ["Training samples per second: train samples × epochs run (every stage of "
              "DAIAN's schedule), over the wall time of the whole fit (its evaluation "
              "passes included), in the same job; mean ± std over seeds.", ""]
    body = [[r.variant, str(r.num_levels), str(r.samples_per_second.count),
             _fmt_stat(r.samples_per_second, 0), _fmt_stat(r.train_seconds, 0)]
            for r in timed]
    lines += _table(["model", "n", "seeds", "samples/s", "fit seconds"], body)
    return lines + [""]


def _markdown(results: Mapping[str, Any], rows: Sequence[SummaryRow]) -> str:
    lines = (_ranking_section(results, rows) + _intent_section(rows)
             + _diversity_section(results, rows) + _throughput_section(rows))
    return "\n".join(lines)


def markdown_table(results: Mapping[str, Any]) -> str:
    """The report's tables in markdown.

    Sections: ranking metrics per `(variant, n)` (mean ± std, RelaImpr against the base,
    then the reference rows such as the oracle and the popularity baseline), intent
    precision (JS divergence) for the variants that report it, GAUC by
    intent-diversity group, and training throughput. A section whose data is absent says it is skipped.

    Args:
        results: the experiment results dict (`experiments.summary`).

    Returns:
        Markdown text.
    """
    return _markdown(results, summarize(results))


# --------------------------------------------------------------------------- files


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays → Python numbers and lists for json.dump."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"results hold a {type(value).__name__}, which is not JSON-able")


def _header(results: Mapping[str, Any]) -> List[str]:
    dataset = results.get("dataset") or {}
    lines = ["# Experiment report", ""]
    if dataset:
        parts = [f"{dataset[k]:,} {label} samples"
                 for k, label in (("train_samples", "training"),
                                  ("validation_samples", "validation (what each fit "
                                   "chose its epochs by)"),
                                  ("eval_samples", "evaluation")) if k in dataset]
        source = f" from `{dataset['raw_dir']}`" if "raw_dir" in dataset else ""
        sizes = (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1
                 else "".join(parts) or "sizes not reported")
        lines += [f"Data: {sizes}{source}.", ""]
    lines += [f"Base variant: `{results.get('base_variant')}`. The full results, "
              f"config included, are in `{RESULTS_FILE}`.", ""]
    return lines


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> Dict[str, Path]:
    """Writes `results.json`, `report.md` and the figures that the results support.

    Args:
        results: the experiment results dict (`experiments.summary`).
        out_dir: output directory, created if missing.

    Returns:
        {file stem: path} of every file written: "results", "report", and those of
        "figure5_intent_distribution", "figure6_gauc_by_diversity", "figure7_levels"
        that were drawn. A figure lacking data is skipped with a line in report.md.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / RESULTS_FILE, "report": out / REPORT_FILE}
    with open(paths["results"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=_json_default)
    rows = summarize(results)
    figure_lines = ["## Figures", ""]
    for file_name, title, draw in FIGURES:
        try:
            fig = draw(results, rows)
        except PlotSkipped as skipped:
            figure_lines += [f"{title}: skipped, {skipped}.", ""]
            continue
        path = out / file_name
        save_png(fig, path)
        paths[Path(file_name).stem] = path
        figure_lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    text = "\n".join(_header(results) + [_markdown(results, rows)] + figure_lines)
    paths["report"].write_text(text, encoding="utf-8")
    return paths
