"""Admin for traffic sources (with presets), affiliate networks (with presets and their
postback URL), offers, landers and campaigns. Importing registers the pages."""

from campaigns.admin import sources  # noqa: F401 -- registers
from campaigns.admin.networks import AffiliateNetworkForm
from campaigns.admin.offers import LanderForm

__all__ = ["AffiliateNetworkForm", "LanderForm"]
