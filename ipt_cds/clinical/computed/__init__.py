"""The Python extractors of the computed facts of cards/facts.yaml, one module per subject.

Each module registers its extractors with ``fact_library.computes``; cards/facts.yaml declares
what their facts read and mean, and start-up binds the two (ipt_cds/clinical/fact_library.py).
Every module here is imported by ``fact_library.registry``: a new one needs no listing.
"""
