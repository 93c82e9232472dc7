"""Experiments (`daian experiment`): train variants over seeds, then report.

`runner.run_experiment` builds the data once per n and trains every variant and seed;
`report` turns a results dict into markdown tables, `results.json` and the paper's
figures (5, 6 and 7) as PNG files.
"""

from daian_tf.experiments.report import markdown_table, summarize, write_report

__all__ = ["markdown_table", "summarize", "write_report"]
