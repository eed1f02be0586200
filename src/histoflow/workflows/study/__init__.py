"""`histoflow study`: a whole-slide study in stages (run.py), its bookkeeping (stages.py), evaluation and report."""
