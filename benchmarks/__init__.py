"""Scripts that produce every figure in the README, side by side with peers, on real data.

Each one takes its data location and ``--json PATH`` (a list of records with named fields),
prints a table, and can write a Markdown table (``--markdown``) and a PNG plot (``--plot``).
"""
