"""The knowledge base as data, installed with the service as the package ``ipt_cds.cards``.

No code: this file only lets an installed wheel, and an editable install, find the data files.
"""
