"""Workflows join the capabilities: run (fit -> evaluate -> report -> tracking), tune, demo, doctor."""
