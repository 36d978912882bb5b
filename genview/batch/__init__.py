"""Whole-dataset view generation on Ray Data into WebDataset shards with a parquet index."""
