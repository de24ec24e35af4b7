"""Fuzz harness for the Caffe readers and load_caffe (see harness.py, tools/fuzz.py)."""
