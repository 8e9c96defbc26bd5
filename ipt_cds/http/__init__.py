"""The HTTP layer: app factory, routes, JSON limits, OpenAPI, errors as answers, client auth.

May import every layer below it (pipeline, fhir, knowledge, clinical, storage, protocol, ops);
the only layer that imports FastAPI or Starlette.
"""
