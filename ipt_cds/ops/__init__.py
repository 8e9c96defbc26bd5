"""Process concerns: settings, logging, metrics and giving memory back.

Imports nothing of the service: every other layer may import it.
"""
