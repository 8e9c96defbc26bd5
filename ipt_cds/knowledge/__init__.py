"""The knowledge base in ``cards/``: loading and validating it, the rule compiler, the expression
language, and ``KnowledgeError``.

May import clinical (the facts and actions rules are written over), protocol and ops; never
http, pipeline or fhir.
"""
