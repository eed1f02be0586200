"""Tests of histoflow.slide."""
