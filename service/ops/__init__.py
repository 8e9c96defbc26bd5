"""Process concerns: settings, logging and metrics.

Imports nothing of the service: every other layer may import it.
"""
