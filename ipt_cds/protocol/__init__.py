"""The CDS Hooks 2.0 objects (pydantic models) and the errors the service answers with.

May import ops only; never a web framework.
"""
