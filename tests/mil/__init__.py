"""Tests of histoflow.mil."""
