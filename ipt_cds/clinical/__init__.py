"""Clinical reasoning over one patient's record: the tolerant FHIR reader, terminology, extractors,
facts, the verdict and suggested resources.

May import protocol and ops only: no files, no network, no database, no web framework.
"""
