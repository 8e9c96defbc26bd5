"""The patient's data from the EHR: the prefetch, and what is missing fetched from fhirServer.

May import knowledge (prefetch templates), protocol and ops; never http or pipeline.
"""
