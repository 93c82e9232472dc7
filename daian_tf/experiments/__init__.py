"""Experiments (`daian experiment`): train variants over seeds, then report.

`runner.run_experiment` builds the data once per n and trains every variant and seed;
`summary` summarises a results dict over seeds, `figures` draws the paper's figures
(5, 6 and 7), and `report` turns a results dict into markdown tables, `results.json` and
those figures as PNG files.
"""

from daian_tf.experiments.report import markdown_table, write_report
from daian_tf.experiments.summary import summarize

__all__ = ["markdown_table", "summarize", "write_report"]
