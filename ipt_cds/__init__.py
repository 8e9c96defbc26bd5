"""IPT CDS Hooks service: is Interpersonal Psychotherapy suitable for this depressed adult?"""

__version__ = "0.1.0"
