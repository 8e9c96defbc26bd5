"""The one error of the knowledge layer: a file the service starts from is missing or wrong."""

from __future__ import annotations


class KnowledgeError(Exception):
    """A knowledge or configuration file is missing or wrong: the service must not start.

    The message names the file first, then the field, so an operator can fix it without the
    code. Raised at start-up only, never while answering a request.
    """
