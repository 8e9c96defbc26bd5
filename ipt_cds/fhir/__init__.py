"""The patient's data from the EHR: the prefetch, and what is missing fetched from fhirServer.

May import protocol and ops only: the prefetch templates come with the Service (protocol),
so the fetch path needs neither the knowledge base nor anything above it.
"""
