"""Figures: pure functions from kvmpt results to ``plotly.graph_objects.Figure``.

One module per topic (``race``, ``memslot``, ``costs`` ...).  The model never imports
this package; notebooks and the report do.
"""
