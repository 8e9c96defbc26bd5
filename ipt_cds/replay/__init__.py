"""Population replay: a Bulk Data export through the services, counted for a CDS committee.

Beside the HTTP layer, not under it: it runs the same pipeline without the web framework.
source (read the export) -> search (the prefetch an EHR would send) -> scenarios (the calls)
-> evaluate (the pipeline) -> tally (the counts) -> run (files and the terminal), with an
engine for one machine (local) and one for a Spark cluster (spark).
"""
