"""Tests of histoflow.predict."""
