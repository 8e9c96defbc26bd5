"""Developer and integrator tooling: fixtures, ``ipt-cds invoke``, the generated rules document.

May import every layer; no runtime layer imports it.
"""
