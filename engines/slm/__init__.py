"""The ``slm`` engine: local small models under grammar-constrained decoding (see ``engine.py``)."""
