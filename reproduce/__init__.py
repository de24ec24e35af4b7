"""Reproduce the FCN papers' demo and tables.

``python -m reproduce.demo`` (the official demo image with voc-fcn8s), ``reproduce.table1`` (backbones),
``table2`` (skip architectures), ``table3`` (test sets, inference time), ``nyud`` (Table 4), ``siftflow``
(Table 5), ``context`` (PASCAL-Context): paper beside measured, in Markdown, with ``missing:`` lines.
"""

import converters._startup  # noqa: F401 - first: a Ctrl-C while torch loads under `python -m` is quiet
