"""The official FCN weights: registry records, cache, verified downloads."""
