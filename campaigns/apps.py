from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from campaigns import models
        from campaigns.services import cache_clear

        cached = (
            models.Campaign,
            models.CampaignOffer,
            models.Offer,
            models.Lander,
            models.AffiliateNetwork,
            models.TrafficSource,
            models.TrafficSourceParameter,
        )
        for model in cached:
            uid = f"campaigns-cache-{model.__name__}"
            post_save.connect(cache_clear, sender=model, dispatch_uid=f"{uid}-save")
            post_delete.connect(cache_clear, sender=model, dispatch_uid=f"{uid}-delete")
