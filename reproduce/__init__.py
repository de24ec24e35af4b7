"""Reproduce the FCN papers' demo and tables: ``python -m reproduce.demo | table1 | table2 | table3``."""
