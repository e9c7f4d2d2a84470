"""Load demo data: a Taboola-like traffic source, an offer, a campaign and a postback rule.

It also creates a superuser with a well-known login (admin / admin), so it runs only for the
local demo: with ``--demo`` (``make run`` passes it) or with DEBUG on.
"""

import uuid
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from campaigns.models import AffiliateNetwork, Campaign, CampaignOffer, Offer, TrafficSource
from postbacks.models import EventType, PostbackRule
from tracker.models import ExchangeRate, RejectionReason

TABOOLA_VARS = [
    (1, "site", "site", "{site}"),
    (2, "site_id", "site_id", "{site_id}"),
    (3, "campaign_id", "campaign_id", "{campaign_id}"),
    (4, "campaign_item_id", "campaign_item_id", "{campaign_item_id}"),
    (5, "platform", "platform", "{platform}"),
]
TABOOLA_POSTBACK = (
    "/actions-handler/log/3/s2s-action?click-id={externalid}&name=lead"
    "&revenue={payout}&currency={payout_currency}"
)


class Command(BaseCommand):
    help = "Create the demo traffic source, offer, campaign, postback rule and admin login."

    def add_arguments(self, parser):
        parser.add_argument("--receiver-url", default="http://127.0.0.1:8001")
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")
        parser.add_argument(
            "--demo",
            action="store_true",
            help="Confirm this is the local demo (make run): the login it creates is public.",
        )

    @transaction.atomic
    def handle(self, *args, receiver_url: str, username: str, password: str, demo: bool, **options):
        if not (demo or settings.DEBUG):
            raise CommandError(
                "demo_setup creates a superuser with a well-known password and is meant for "
                "the local demo only. Run it through `make run`, or pass --demo on a machine "
                "nobody else can reach. On a real instance use `manage.py createsuperuser`."
            )
        User = get_user_model()
        if not User.objects.filter(username=username).exists():
            User.objects.create_superuser(username, f"{username}@example.com", password)
            login = f"{username} / {password}"
        else:
            login = f"{username} (existing user, password unchanged)"

        source, _ = TrafficSource.objects.get_or_create(
            name="Taboola (demo)",
            defaults={"external_id_param": "external_id", "external_id_placeholder": "{click_id}"},
        )
        for slot, name, param, placeholder in TABOOLA_VARS:
            source.parameters.get_or_create(
                slot=slot, defaults={"name": name, "param": param, "placeholder": placeholder}
            )
        network, _ = AffiliateNetwork.objects.get_or_create(name="Demo network")
        offer, _ = Offer.objects.get_or_create(
            name="Demo offer",
            defaults={
                "affiliate_network": network,
                "url": f"{receiver_url}/offer?s2={{cf_click_id}}",
                "payout": Decimal("2.35"),
                "currency": "USD",
            },
        )
        campaign, _ = Campaign.objects.get_or_create(
            name="Taboola demo campaign", defaults={"traffic_source": source}
        )
        CampaignOffer.objects.get_or_create(campaign=campaign, offer=offer)
        rule, created = PostbackRule.objects.get_or_create(
            name="Taboola lead postback (demo)",
            defaults={
                "event_type": EventType.CONVERSION,
                "statuses": ["approved"],
                "url_template": receiver_url + TABOOLA_POSTBACK,
                "retry_base_seconds": 5,
            },
        )
        if created:
            rule.traffic_sources.add(source)
        # A CRM endpoint that waits 2 minutes for fraud checks (cancelled if the lead is
        # rejected meanwhile), posting JSON with a templated header.
        PostbackRule.objects.get_or_create(
            name="CRM lead sync after fraud checks (demo)",
            defaults={
                "event_type": EventType.CONVERSION,
                "statuses": ["approved"],
                "delay_seconds": 120,
                "url_template": receiver_url + "/crm/leads",
                "http_method": "POST",
                "body_format": "json",
                "body_template": '{"click_id": "{click.id}", "txid": "{txid}", '
                '"payout": {payout|0}, "status": "{status}", "source": "{trafficsource.name}"}',
                "headers_template": "X-Delivery: {delivery.id}",
                "success_mode": "contains",
                "success_pattern": "OK",
                "retry_base_seconds": 5,
            },
        )
        fraud_rule, created = PostbackRule.objects.get_or_create(
            name="Fraud rejections to the traffic source (demo)",
            defaults={
                "event_type": EventType.CONVERSION,
                "statuses": ["rejected"],
                "trigger": "changed",
                "url_template": receiver_url
                + "/rejections?cid={externalid}&reason={rejection_reason}",
                "retry_base_seconds": 5,
            },
        )
        if created:
            fraud_rule.rejection_reasons.set(RejectionReason.objects.filter(code="fraud"))
        if not network.status_map:
            network.status_map = {"1": "approved", "2": "pending", "3": "rejected"}
            network.save(update_fields=["status_map"])
        # Sample rates (1 unit in the display currency), so that EUR/GBP payouts also show
        # in USD; edit them in the admin or load a file (exchange_rates_load).
        for code, rate in (("EUR", "1.08"), ("GBP", "1.27")):
            if code != settings.TRACKER_DISPLAY_CURRENCY:
                ExchangeRate.objects.get_or_create(currency=code, defaults={"rate": Decimal(rate)})

        base = settings.TRACKER_BASE_URL
        external_id = f"tbl-{uuid.uuid4().hex[:12]}"
        click_url = f"{base}/c/{campaign.key}?" + urlencode(
            {"external_id": external_id, "site": "demo-news", "platform": "Desktop"}
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Postback manager demo is ready.",
                    f"  Admin:          {base}/admin/",
                    f"  Login:          {login}",
                    f"  Campaign link:  {click_url}",
                    f"  Tracking URL:   {campaign.tracking_url()}",
                    f"  Postback log:   {base}/admin/postbacks/attempt/",
                    f"  Inbound log:    {base}/admin/tracker/inboundrequest/",
                    f"  Network URL:    {network.postback_url(show_token=False)}",
                    f'  Pixel:          <img src="{base}/cv.gif?payout=2.35&txid=ORDER">',
                    "",
                    "Open the campaign link: it records a click and redirects to the demo offer",
                    "page, whose link plays the network's S2S postback to /cv. The postback to",
                    f"Taboola then reaches the local receiver at {receiver_url}.",
                    "",
                ]
            )
        )
