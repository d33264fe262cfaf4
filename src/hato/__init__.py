"""hato: a mail server that runs Postfix configurations unchanged."""

__version__ = "0.1.0"
MAIL_NAME = "hato"
