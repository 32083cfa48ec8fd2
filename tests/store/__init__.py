"""Tests of the store: migrations, models and constraints, the change feed."""
