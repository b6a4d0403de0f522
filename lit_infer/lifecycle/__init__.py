"""The run's lifecycle around Lightning's predict loop: plan before it, finalize after it.

Its pieces are plain functions (fingerprint, resume decision, merge and summary) that the writer and the run call;
this package imports nothing at load time, so the writer can use them without a cycle.
"""
