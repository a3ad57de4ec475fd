"""Lava processes that drive a bare LearningDense with given sequences (tests/conformance/test_engine_model.py)."""
