"""Model factories for tests (factory_boy), one per model, each building a valid object
with overridable fields; and the short helpers most tests call (``traffic_source()``,
``offer()``, ``campaign()``, ``click()``, ``rule()``, ``delivery()``), built on them.

``XFactory()`` saves a row, ``XFactory.build()`` makes an unsaved instance; related rows
are made on the way unless given (``ClickFactory(campaign=...)``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from campaigns.models import (
    AffiliateNetwork,
    Campaign,
    CampaignOffer,
    Lander,
    Offer,
    TrafficSource,
    TrafficSourceParameter,
)
from postbacks.models import Attempt, Delivery, EventType, PostbackRule, Worker, destination_host
from tracker.models import (
    APIToken,
    Click,
    Conversion,
    ConversionStatusChange,
    ConversionType,
    ConversionUpload,
    ExchangeRate,
    Impression,
    InboundRequest,
    RejectionReason,
    TaskRun,
)

TABOOLA_PATH = (
    "/actions-handler/log/3/s2s-action?click-id={externalid}&name=lead"
    "&revenue={payout}&currency={payout_currency}"
)


# --- users and tokens ------------------------------------------------------------------------


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("pw-123456")


class APITokenFactory(factory.django.DjangoModelFactory):
    """An API token; the full key is on ``token.key`` (only known at creation)."""

    class Meta:
        model = APIToken

    name = "test"
    user = factory.SubFactory(UserFactory)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        token, key = model_class.objects.create_key(**kwargs)
        token.key = key
        return token


# --- campaigns -------------------------------------------------------------------------------


class TrafficSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrafficSource

    name = "Taboola"
    external_id_param = "external_id"
    external_id_placeholder = "{click_id}"


class TrafficSourceParameterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrafficSourceParameter

    traffic_source = factory.SubFactory(TrafficSourceFactory)
    slot = 1
    name = "site"
    param = "site"
    placeholder = "{site}"


class AffiliateNetworkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AffiliateNetwork
        django_get_or_create = ("name",)

    name = "Network"


class OfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Offer

    name = "Offer"
    url = "https://offer.example/?s2={cf_click_id}"
    payout = Decimal("1.50")
    affiliate_network = factory.SubFactory(AffiliateNetworkFactory)


class LanderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lander

    name = "Lander"
    url = "https://lander.example/?cid={click_id}"


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = "Campaign"
    traffic_source = factory.SubFactory(TrafficSourceFactory)


class CampaignOfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CampaignOffer

    campaign = factory.SubFactory(CampaignFactory)
    offer = factory.SubFactory(OfferFactory)


# --- tracker ---------------------------------------------------------------------------------


class ClickFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Click

    campaign = factory.SubFactory(CampaignFactory)
    traffic_source = factory.SelfAttribute("campaign.traffic_source")
    offer = factory.LazyAttribute(
        lambda click: first.offer if (first := click.campaign.campaign_offers.first()) else None
    )
    external_id = "ext-123"


class ImpressionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Impression

    campaign = factory.SubFactory(CampaignFactory)
    traffic_source = factory.SelfAttribute("campaign.traffic_source")
    external_id = "imp-123"


class ConversionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversion

    click = factory.SubFactory(ClickFactory)
    txid = factory.Sequence(lambda n: f"T-{n}")
    dedup_key = factory.LazyAttribute(lambda conversion: f"t:{conversion.txid}")
    payout = Decimal("1.50")


class ConversionStatusChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionStatusChange

    conversion = factory.SubFactory(ConversionFactory)
    old_status = Conversion.Status.PENDING
    new_status = Conversion.Status.APPROVED
    source = ConversionStatusChange.Source.S2S


class RejectionReasonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RejectionReason
        django_get_or_create = ("code",)

    code = "fraud"
    label = "Fraud"


class ConversionTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionType
        django_get_or_create = ("code",)

    code = "lead"
    label = "Lead"


class ExchangeRateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ExchangeRate
        django_get_or_create = ("currency",)

    currency = "EUR"
    rate = Decimal("1.10")


class ConversionUploadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionUpload

    file_name = "conversions.csv"
    content = "click_id,payout,txid\n"


class InboundRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InboundRequest

    endpoint = "/cv"
    method = "GET"
    response_status = 200
    outcome = InboundRequest.Outcome.ACCEPTED


# --- postbacks -------------------------------------------------------------------------------


class PostbackRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PostbackRule
        skip_postgeneration_save = True

    name = "Rule"
    event_type = EventType.CONVERSION
    url_template = "http://127.0.0.1:9" + TABOOLA_PATH

    @factory.post_generation
    def traffic_sources(self, create, extracted, **kwargs):
        if create and extracted is not None:
            self.traffic_sources.set(extracted)


class DeliveryFactory(factory.django.DjangoModelFactory):
    """A scheduled delivery of a click, due now (``due_at`` to change it)."""

    class Meta:
        model = Delivery

    event_type = EventType.CONVERSION
    kind = "s2s"
    click = factory.SubFactory(ClickFactory)
    idempotency_key = factory.LazyFunction(lambda: f"test:{uuid.uuid4()}")
    url = "http://127.0.0.1:9/postback"
    host = factory.LazyAttribute(lambda delivery: destination_host(delivery.url))
    due_at = factory.LazyFunction(timezone.now)


class AttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attempt

    delivery = factory.SubFactory(DeliveryFactory)
    number = 1
    started_at = factory.LazyFunction(timezone.now)
    method = "GET"
    url = factory.SelfAttribute("delivery.url")
    status_code = 200
    outcome = "delivered"


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    name = factory.Sequence(lambda n: f"host:{1000 + n}:test")
    heartbeat_at = factory.LazyFunction(timezone.now)


class TaskRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaskRun

    name = factory.Sequence(lambda n: f"tests.periodic_{n}")
    finished_at = factory.LazyFunction(timezone.now)
    state = "SUCCESS"


# --- the short helpers -----------------------------------------------------------------------


def traffic_source(name: str = "Taboola", **fields) -> TrafficSource:
    """A traffic source with one custom parameter, ``site`` (slot 1, ``{site}``)."""
    source = TrafficSourceFactory(name=name, **fields)
    TrafficSourceParameterFactory(traffic_source=source)
    return source


def offer(name: str = "Offer", **fields) -> Offer:
    """An offer of the network named "Network" unless ``affiliate_network`` is given."""
    if "affiliate_network" not in fields:
        fields["affiliate_network"] = AffiliateNetworkFactory()
    return OfferFactory(name=name, **fields)


def campaign(source: TrafficSource | None = None, *offers: Offer, **fields) -> Campaign:
    """A campaign of ``source`` (a new one by default) rotating ``offers`` (a new one)."""
    created = CampaignFactory(
        name=fields.pop("name", "Campaign"), traffic_source=source or traffic_source()
    )
    for item in offers or (offer(),):
        CampaignOfferFactory(campaign=created, offer=item)
    return created


def click(camp: Campaign | None = None, **fields) -> Click:
    """A click on ``camp`` (a new campaign by default), landing on its first offer."""
    return ClickFactory(campaign=camp or campaign(), **fields)


def rule(url: str, *, sources: list[TrafficSource] = (), **fields) -> PostbackRule:
    """A conversion rule to ``url``, scoped to ``sources`` (all when none)."""
    return PostbackRuleFactory(url_template=url, traffic_sources=list(sources), **fields)


def delivery(url: str, *, due_in: float = 0, **fields) -> Delivery:
    """A scheduled delivery of the newest click (a new one if none) to ``url``, due
    ``due_in`` seconds from now."""
    if "click" not in fields:
        fields["click"] = Click.objects.order_by("created_at").last() or click()
    return DeliveryFactory(url=url, due_at=timezone.now() + timedelta(seconds=due_in), **fields)
