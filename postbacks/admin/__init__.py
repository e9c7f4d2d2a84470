"""Admin for postbacks: rules (``rules``) and the delivery log (``log``)."""

from postbacks.admin import log, rules  # noqa: F401  (registers the model admins)
