"""What the service remembers: the store (feedback, cards shown, used JWT ids), its migrations and
the batching card recorder.

May import protocol and ops only.
"""
